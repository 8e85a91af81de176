"""Activation layers: ReLU, Tanh, Sigmoid, GELU, Softmax, LogSoftmax, SiLU, LeakyReLU, ELU, ..."""

from __future__ import annotations

from . import functional as F
from .module import Module


class ReLU(Module):
    """max(x, 0); ``inplace=True`` writes the result into the input."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):  # noqa: A002
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Tanh(Module):
    """Hyperbolic tangent, elementwise."""

    def forward(self, input):  # noqa: A002
        return F.tanh(input)


class Sigmoid(Module):
    """1 / (1 + exp(-x)), elementwise."""

    def forward(self, input):  # noqa: A002
        return F.sigmoid(input)


class GELU(Module):
    """x * Phi(x), exactly (``approximate='none'``) or with the tanh formula (``'tanh'``)."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):  # noqa: A002
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    """exp(x) normalised to sum to 1 along ``dim``."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):  # noqa: A002
        return F.softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log(softmax(x)) along ``dim``, computed stably (pair it with NLLLoss)."""

    def forward(self, input):  # noqa: A002
        return F.log_softmax(input, self.dim)


class _Elementwise(Module):
    """A layer that applies one ``F`` function, with its keyword arguments shown in ``repr``."""

    _fn = None
    _args = ()

    def __init__(self, *args, **kwargs):
        super().__init__()
        for name, default in self._args:
            setattr(self, name, default)
        for (name, _), value in zip(self._args, args):
            setattr(self, name, value)
        for name, value in kwargs.items():
            if name not in dict(self._args):
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {name!r}")
            setattr(self, name, value)

    def forward(self, input):  # noqa: A002
        return type(self)._fn(input, **{name: getattr(self, name) for name, _ in self._args})

    def extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)}" for name, _ in self._args if name != "inplace"
                         or getattr(self, name))


def _layer(name, fn, args=(), doc=""):
    return type(name, (_Elementwise,), {"_fn": staticmethod(fn), "_args": tuple(args), "__doc__": doc,
                                        "__module__": __name__})


SiLU = _layer("SiLU", F.silu, [("inplace", False)], "x * sigmoid(x)")
Mish = _layer("Mish", F.mish, [("inplace", False)], "x * tanh(softplus(x))")
Softplus = _layer("Softplus", F.softplus, [("beta", 1.0), ("threshold", 20.0)], "log(1 + exp(beta x)) / beta")
LeakyReLU = _layer("LeakyReLU", F.leaky_relu, [("negative_slope", 0.01), ("inplace", False)],
                   "x for x > 0, negative_slope * x below")
ELU = _layer("ELU", F.elu, [("alpha", 1.0), ("inplace", False)], "x for x > 0, alpha (exp(x) - 1) below")
CELU = _layer("CELU", F.celu, [("alpha", 1.0), ("inplace", False)], "ELU with exp(x / alpha)")
SELU = _layer("SELU", F.selu, [("inplace", False)], "scaled ELU (self-normalising)")
Hardtanh = _layer("Hardtanh", F.hardtanh, [("min_val", -1.0), ("max_val", 1.0), ("inplace", False)],
                  "clamp to [min_val, max_val]")
ReLU6 = _layer("ReLU6", F.relu6, [("inplace", False)], "clamp to [0, 6]")
Hardsigmoid = _layer("Hardsigmoid", F.hardsigmoid, [("inplace", False)], "relu6(x + 3) / 6")
Hardswish = _layer("Hardswish", F.hardswish, [("inplace", False)], "x * relu6(x + 3) / 6")
LogSigmoid = _layer("LogSigmoid", F.logsigmoid, (), "log(sigmoid(x))")
Softsign = _layer("Softsign", F.softsign, (), "x / (1 + |x|)")
Tanhshrink = _layer("Tanhshrink", F.tanhshrink, (), "x - tanh(x)")
