"""Neural-network layers, losses and initialisers (``ddpgrad.nn``), with PyTorch's names."""

from . import functional, init, utils  # noqa: F401
from .activation import GELU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh  # noqa: F401
from .container import ModuleDict, ModuleList, Sequential  # noqa: F401
from .dropout import Dropout  # noqa: F401
from .flatten import Flatten  # noqa: F401
from .linear import Identity, Linear  # noqa: F401
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss  # noqa: F401
from .module import Module  # noqa: F401
from .normalization import LayerNorm  # noqa: F401
from .parameter import Parameter  # noqa: F401
from .sparse import Embedding  # noqa: F401
