"""Random numbers: one global generator that ``manual_seed`` resets, as in PyTorch.

Values are drawn on the host and moved to the device, so a seed gives the same numbers on the
CPU and on a GPU. The streams differ from PyTorch's: seeds are reproducible, not interchangeable.
"""

from __future__ import annotations

import json
import threading

import numpy as np

from . import backend
from .tensor import Tensor

_DEFAULT_SEED = 0x5EED  # any fixed seed: an unseeded program is still reproducible


class Generator:
    """A random stream of its own (for ``DataLoader(generator=...)`` and ``randperm``)."""

    def __init__(self, device="cpu"):
        self.device = backend.as_device(device)
        self._rng = np.random.Generator(np.random.PCG64(_DEFAULT_SEED))
        self._seed = _DEFAULT_SEED

    def manual_seed(self, seed):
        self._seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def seed(self):
        return self.manual_seed(np.random.SeedSequence().entropy % (2**63))._seed

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """The stream's position as a uint8 tensor (round-trips through ``ddpgrad.save``)."""
        raw = json.dumps(self._rng.bit_generator.state).encode()
        return Tensor._make(np.frombuffer(raw, dtype=np.uint8).copy())

    def set_state(self, state):
        raw = np.asarray(state, dtype=np.uint8).tobytes()
        self._rng.bit_generator.state = json.loads(raw.decode())
        return self


default_generator = Generator()
_thread = threading.local()


def use_thread_generator(generator=True):
    """Give this thread a default generator of its own (``launch_threads`` ranks), or drop it."""
    _thread.generator = Generator() if generator is True else generator


def current_generator():
    """The generator that ``manual_seed`` and every unseeded draw use on this thread."""
    return getattr(_thread, "generator", None) or default_generator


def manual_seed(seed):
    """Seed every random call and parameter initialisation (and CuPy's generator if loaded)."""
    current_generator().manual_seed(seed)
    if backend._cupy is not None:
        backend._cupy.random.seed(int(seed))
    return current_generator()


def seed():
    return current_generator().seed()


def initial_seed():
    return current_generator().initial_seed()


def get_rng_state():
    return current_generator().get_state()


def set_rng_state(state):
    current_generator().set_state(state)


def _rng(generator):
    return (generator or current_generator())._rng


def _finish(array, dtype, device):
    array = array.astype(dtype, copy=False)
    return backend.to_device(array, backend.as_device(device))


def normal_array(mean, std, shape, dtype, device=None, generator=None):
    dtype = backend.as_dtype(dtype) or backend.get_default_dtype()
    draw_dtype = dtype if dtype in (backend.float32, backend.float64) else backend.float32
    z = _rng(generator).standard_normal(tuple(shape), dtype=draw_dtype)
    if std != 1:
        z *= std
    if mean != 0:
        z += mean
    return _finish(z, dtype, device)


def uniform_array(low, high, shape, dtype, device=None, generator=None):
    dtype = backend.as_dtype(dtype) or backend.get_default_dtype()
    draw_dtype = dtype if dtype in (backend.float32, backend.float64) else backend.float32
    u = _rng(generator).random(tuple(shape), dtype=draw_dtype)
    if (low, high) != (0, 1):
        u *= high - low
        u += low
    return _finish(u, dtype, device)


def randint_array(low, high, shape, dtype=None, device=None, generator=None):
    dtype = backend.as_dtype(dtype) or backend.int64
    return _finish(_rng(generator).integers(low, high, size=tuple(shape)), dtype, device)


def permutation_array(n, device=None, generator=None):
    return _finish(_rng(generator).permutation(n), backend.int64, device)


def bernoulli_mask(keep_prob, shape, dtype, device=None, generator=None):
    """A 0/1 array of ``dtype``: 1 with probability ``keep_prob``."""
    return _finish(_rng(generator).random(tuple(shape), dtype=np.float32) < keep_prob, dtype, device)
