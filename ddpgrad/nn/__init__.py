"""Neural-network layers, losses and initialisers (``ddpgrad.nn``), with PyTorch's names."""

from . import functional, init, utils  # noqa: F401
from .activation import (  # noqa: F401
    CELU, ELU, GELU, SELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU, LogSigmoid, LogSoftmax, Mish,
    ReLU, ReLU6, Sigmoid, SiLU, Softmax, Softplus, Softsign, Tanh, Tanhshrink,
)
from .container import ModuleDict, ModuleList, Sequential  # noqa: F401
from .dropout import Dropout  # noqa: F401
from .flatten import Flatten  # noqa: F401
from .linear import Identity, Linear  # noqa: F401
from .loss import (  # noqa: F401
    BCELoss, BCEWithLogitsLoss, CosineEmbeddingLoss, CrossEntropyLoss, GaussianNLLLoss, HuberLoss, KLDivLoss,
    L1Loss, MarginRankingLoss, MSELoss, NLLLoss, PoissonNLLLoss, SmoothL1Loss, SoftMarginLoss,
)
from .module import Module  # noqa: F401
from .normalization import LayerNorm  # noqa: F401
from .parameter import Parameter  # noqa: F401
from .sparse import Embedding  # noqa: F401


def __getattr__(name):
    # ``nn.parallel.DistributedDataParallel`` without its own import (it lives in the distributed layer)
    if name == "parallel":
        import importlib  # noqa: PLC0415

        return importlib.import_module(".parallel", __name__)
    raise AttributeError(f"module 'ddpgrad.nn' has no attribute {name!r}")
