"""ddpgrad: data-parallel training over MPI, with a PyTorch-style API on NumPy (or CuPy).

Swap ``import torch`` for ``import ddpgrad as torch`` in a script that stays inside the supported
subset (see README.md) and it runs with the same numbers.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import backend
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .backend import (
    bool_ as bool,  # noqa: A001 - torch.bool
    device,
    float16,
    float32,
    float64,
    get_default_device,
    get_default_dtype,
    int8,
    int16,
    int32,
    int64,
    set_default_device,
    set_default_dtype,
    uint8,
)
from .ops import *  # noqa: F401,F403
from .ops import abs, all, any, max, min, pow, round, sum  # noqa: A004,F401 - PyTorch's names
from .random import Generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from .tensor import Size, Tensor, is_tensor

half = float16
float = float32  # noqa: A001
double = float64
int = int32  # noqa: A001
long = int64
inference_mode = no_grad

from . import autograd, linalg, nn, optim, utils  # noqa: E402
from . import backends, cuda  # noqa: E402
from .serialization import load, save  # noqa: E402


def __getattr__(name):
    # ``torch.distributed`` without its own import, as PyTorch has it; imported on first use so that
    # ``import ddpgrad`` stays light (and never touches MPI: the communicator picks that later)
    if name == "distributed":
        import importlib  # noqa: PLC0415

        return importlib.import_module(".distributed", __name__)
    raise AttributeError(f"module 'ddpgrad' has no attribute {name!r}")
