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


# ---------------------------------------------------------------------------- the unary family
class Unary(Function):
    """``f(a)`` elementwise; a subclass gives ``compute(xp, a)`` and ``derivative(xp, a, out)``."""

    @staticmethod
    def forward(ctx, a, **params):
        xp = array_module(a)
        ctx.params = params
        with _quiet(xp):
            out = ctx.compute(xp, a, **params)
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        xp = array_module(grad)
        with _quiet(xp):
            return grad * ctx.derivative(xp, a, out, **ctx.params)


def _unary(name, compute, derivative, doc):
    return type(name, (Unary,), {
        "compute": staticmethod(compute), "derivative": staticmethod(derivative), "__doc__": doc,
    })


def _zero(xp, a, out, **_):
    return xp.zeros_like(a)


def _softplus(xp, a, beta=1.0, threshold=20.0):
    scaled = a * beta
    return xp.where(scaled > threshold, a, xp.logaddexp(0, scaled) / beta)


def _softplus_grad(xp, a, out, beta=1.0, threshold=20.0):
    scaled = a * beta
    return xp.where(scaled > threshold, 1, sigmoid_array(scaled))


def _elu(xp, a, alpha=1.0, scale=1.0, input_scale=1.0):
    return scale * xp.where(a > 0, a, alpha * xp.expm1(a * input_scale))


def _elu_grad(xp, a, out, alpha=1.0, scale=1.0, input_scale=1.0):
    return xp.where(a > 0, scale, scale * alpha * input_scale * xp.exp(a * input_scale))


def _hardtanh_grad(xp, a, out, min_val=-1.0, max_val=1.0):
    return (a > min_val) & (a < max_val)


def _round(xp, a, decimals=0):
    return xp.round(a, decimals)


def _silu_grad(xp, a, out):
    s = sigmoid_array(a)
    return s * (1 + a * (1 - s))


def _mish(xp, a):
    return a * xp.tanh(xp.logaddexp(0, a))


def _mish_grad(xp, a, out):
    t = xp.tanh(xp.logaddexp(0, a))
    return t + a * sigmoid_array(a) * (1 - t * t)


_HALF_LOG_2 = 0.5 * math.log(2.0)

Sin = _unary("Sin", lambda xp, a: xp.sin(a), lambda xp, a, out: xp.cos(a), "sin")
Cos = _unary("Cos", lambda xp, a: xp.cos(a), lambda xp, a, out: -xp.sin(a), "cos")
Tan = _unary("Tan", lambda xp, a: xp.tan(a), lambda xp, a, out: 1 + out * out, "tan")
Asin = _unary("Asin", lambda xp, a: xp.arcsin(a), lambda xp, a, out: 1 / xp.sqrt(1 - a * a), "asin")
Acos = _unary("Acos", lambda xp, a: xp.arccos(a), lambda xp, a, out: -1 / xp.sqrt(1 - a * a), "acos")
Atan = _unary("Atan", lambda xp, a: xp.arctan(a), lambda xp, a, out: 1 / (1 + a * a), "atan")
Sinh = _unary("Sinh", lambda xp, a: xp.sinh(a), lambda xp, a, out: xp.cosh(a), "sinh")
Cosh = _unary("Cosh", lambda xp, a: xp.cosh(a), lambda xp, a, out: xp.sinh(a), "cosh")
Asinh = _unary("Asinh", lambda xp, a: xp.arcsinh(a), lambda xp, a, out: 1 / xp.sqrt(a * a + 1), "asinh")
Acosh = _unary("Acosh", lambda xp, a: xp.arccosh(a), lambda xp, a, out: 1 / xp.sqrt(a * a - 1), "acosh")
Atanh = _unary("Atanh", lambda xp, a: xp.arctanh(a), lambda xp, a, out: 1 / (1 - a * a), "atanh")
Exp2 = _unary("Exp2", lambda xp, a: xp.exp2(a), lambda xp, a, out: out * math.log(2.0), "2 ** a")
Expm1 = _unary("Expm1", lambda xp, a: xp.expm1(a), lambda xp, a, out: out + 1, "exp(a) - 1")
Log1p = _unary("Log1p", lambda xp, a: xp.log1p(a), lambda xp, a, out: 1 / (1 + a), "log(1 + a)")
Log2 = _unary("Log2", lambda xp, a: xp.log2(a), lambda xp, a, out: 1 / (a * math.log(2.0)), "log2")
Log10 = _unary("Log10", lambda xp, a: xp.log10(a), lambda xp, a, out: 1 / (a * math.log(10.0)), "log10")
Rsqrt = _unary("Rsqrt", lambda xp, a: 1 / xp.sqrt(a), lambda xp, a, out: -0.5 * out ** 3, "1 / sqrt(a)")
Reciprocal = _unary("Reciprocal", lambda xp, a: 1 / a, lambda xp, a, out: -out * out, "1 / a")
Square = _unary("Square", lambda xp, a: a * a, lambda xp, a, out: 2 * a, "a * a")
Sign = _unary("Sign", lambda xp, a: xp.sign(a), _zero, "-1, 0 or 1")
Floor = _unary("Floor", lambda xp, a: xp.floor(a), _zero, "floor")
Ceil = _unary("Ceil", lambda xp, a: xp.ceil(a), _zero, "ceil")
Round = _unary("Round", _round, _zero, "round half to even, as PyTorch")
Trunc = _unary("Trunc", lambda xp, a: xp.trunc(a), _zero, "trunc")
Frac = _unary("Frac", lambda xp, a: a - xp.trunc(a), lambda xp, a, out: xp.ones_like(a), "a - trunc(a)")
Erf = _unary("Erf", lambda xp, a: erf(a), lambda xp, a, out: (2 * _INV_SQRT_2PI * math.sqrt(2)) * xp.exp(-a * a),
             "the error function")
Erfc = _unary("Erfc", lambda xp, a: 1 - erf(a), lambda xp, a, out: (-2 * _INV_SQRT_2PI * math.sqrt(2)) * xp.exp(-a * a),
              "1 - erf(a)")
Softplus = _unary("Softplus", _softplus, _softplus_grad, "log(1 + exp(beta a)) / beta, linear above threshold")
Silu = _unary("Silu", lambda xp, a: a * sigmoid_array(a), _silu_grad, "a * sigmoid(a)")
Mish = _unary("Mish", _mish, _mish_grad, "a * tanh(softplus(a))")
LogSigmoid = _unary("LogSigmoid", lambda xp, a: -xp.logaddexp(0, -a), lambda xp, a, out: sigmoid_array(-a),
                    "log(sigmoid(a))")
Softsign = _unary("Softsign", lambda xp, a: a / (1 + xp.abs(a)), lambda xp, a, out: 1 / (1 + xp.abs(a)) ** 2,
                  "a / (1 + |a|)")
Tanhshrink = _unary("Tanhshrink", lambda xp, a: a - xp.tanh(a), lambda xp, a, out: xp.tanh(a) ** 2, "a - tanh(a)")
LeakyRelu = _unary("LeakyRelu", lambda xp, a, negative_slope=0.01: xp.where(a > 0, a, a * negative_slope),
                   lambda xp, a, out, negative_slope=0.01: xp.where(a > 0, 1, negative_slope), "leaky relu")
Elu = _unary("Elu", _elu, _elu_grad, "elu (and selu / celu through scale and input_scale)")
Hardtanh = _unary("Hardtanh", lambda xp, a, min_val=-1.0, max_val=1.0: xp.clip(a, min_val, max_val),
                  _hardtanh_grad, "clamp to [min_val, max_val]")
Hardsigmoid = _unary("Hardsigmoid", lambda xp, a: xp.clip(a / 6 + 0.5, 0, 1),
                     lambda xp, a, out: ((a > -3) & (a < 3)) / 6, "relu6(a + 3) / 6")
Hardswish = _unary("Hardswish", lambda xp, a: a * xp.clip(a + 3, 0, 6) / 6,
                   lambda xp, a, out: xp.where(a < -3, 0, xp.where(a <= 3, a / 3 + 0.5, 1)), "a * relu6(a + 3) / 6")


class Atan2(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return array_module(a).arctan2(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        with _quiet(array_module(grad)):
            scale = grad / (a * a + b * b)
        return scale * b, -scale * a


class Remainder(Function):
    """``a - floor(a / b) * b`` (Python's sign convention, as ``torch.remainder``); ``fmod`` truncates."""

    @staticmethod
    def forward(ctx, a, b, truncate=False):
        xp = array_module(a)
        ctx.save_for_backward(a, b)
        ctx.truncate = truncate
        with _quiet(xp):
            return xp.fmod(a, b) if truncate else xp.remainder(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        xp = array_module(grad)
        gb = None
        if _wants(ctx, 1):
            with _quiet(xp):
                q = xp.trunc(a / b) if ctx.truncate else xp.floor(a / b)
            gb = -grad * q
        return grad, gb
