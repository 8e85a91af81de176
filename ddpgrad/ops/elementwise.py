"""Elementwise unary functions."""

from __future__ import annotations

import math

import numpy as np

from ..autograd.function import Function
from ..backend import array_module
from .arith import _quiet, _wants


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        with _quiet(array_module(a)):
            return array_module(a).log(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad / a


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        with _quiet(array_module(a)):
            out = array_module(a).sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        with _quiet(array_module(out)):
            return grad / (2 * out)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return array_module(a).abs(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad * array_module(a).sign(a)


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * (1 - out * out)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        out = sigmoid_array(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * (out * (1 - out))


def sigmoid_array(a):
    """1 / (1 + exp(-a)) without overflow for large |a|."""
    xp = array_module(a)
    e = xp.exp(-xp.abs(a))
    return xp.where(a >= 0, 1 / (1 + e), e / (1 + e))


class Relu(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).maximum(a, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * (out > 0)


class Clamp(Function):
    """``clip(a, lo, hi)``; the bounds are numbers, None or arrays (which get gradients too).

    As in PyTorch, ``a`` keeps the gradient where it touches a bound; a bound gets it only where
    ``a`` is strictly beyond it (and ``hi`` wherever ``lo > hi``, since the result is ``hi`` there).
    """

    @staticmethod
    def forward(ctx, a, lo=None, hi=None):
        ctx.save_for_backward(a, lo, hi)
        return array_module(a).clip(a, lo, hi)

    @staticmethod
    def backward(ctx, grad):
        a, lo, hi = ctx.saved_tensors
        ga = glo = ghi = None
        if _wants(ctx, 0):
            keep = True
            if lo is not None:
                keep = a >= lo
            if hi is not None:
                keep = keep & (a <= hi)
            ga = grad * keep
        if len(ctx.next_nodes) > 1 and _wants(ctx, 1):
            below = a < lo
            glo = grad * (below if hi is None else below & (lo < hi))
        if len(ctx.next_nodes) > 2 and _wants(ctx, 2):
            above = a > hi
            ghi = grad * (above if lo is None else above | (hi < lo))
        return ga, glo, ghi


_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_CUBIC = 0.044715  # coefficient of the tanh approximation (Hendrycks & Gimpel)


def erf(x):
    """The error function, elementwise, for NumPy or CuPy arrays."""
    xp = array_module(x)
    if xp is np:
        return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=x.dtype)  # a float for 0-d x
    from cupyx.scipy.special import erf as cupy_erf  # noqa: PLC0415

    return cupy_erf(x)


class Gelu(Function):
    @staticmethod
    def forward(ctx, a, approximate="none"):
        xp = array_module(a)
        ctx.save_for_backward(a)
        ctx.approximate = approximate
        if approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (a + _GELU_TANH_CUBIC * a**3)
            t = xp.tanh(inner)
            ctx.t = t
            return 0.5 * a * (1 + t)
        cdf = 0.5 * (1 + erf(a * _SQRT_HALF))
        ctx.cdf = cdf
        return a * cdf

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        xp = array_module(a)
        if ctx.approximate == "tanh":
            t = ctx.t
            dinner = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_CUBIC * a * a)
            return grad * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * dinner)
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * a * a)
        return grad * (ctx.cdf + a * pdf)
