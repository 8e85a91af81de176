"""The functional API (``ddpgrad.exp(x)``, ``ddpgrad.cat([...])``) and the Tensor methods built on it."""

from __future__ import annotations

import builtins as _builtins
import collections

import numpy as np

from ..backend import array_module
from ..tensor import Tensor, _index_arrays
from . import arith, elementwise, reduce
from . import shape as shape_ops
from .creation import (  # noqa: F401  (re-exported)
    arange, as_tensor, empty, empty_like, eye, from_numpy, full, full_like, linspace, ones,
    ones_like, rand, rand_like, randint, randn, randn_like, randperm, tensor, zeros, zeros_like,
)

values_indices = collections.namedtuple("values_indices", ["values", "indices"])


def _scalar(x):
    """NumPy scalars become Python numbers, so they never promote a float32 tensor to float64."""
    return x.item() if isinstance(x, np.generic) else x


def _binary(fn, a, b):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = tensor(a)
    return fn.apply(_scalar(a), _scalar(b))


def add(a, b, alpha=1):
    return _binary(arith.Add, a, b if alpha == 1 else b * alpha)


def sub(a, b, alpha=1):
    return _binary(arith.Sub, a, b if alpha == 1 else b * alpha)


def mul(a, b):
    return _binary(arith.Mul, a, b)


def div(a, b):
    return _binary(arith.Div, a, b)


true_divide = divide = div
multiply = mul
subtract = sub


def pow(a, b):  # noqa: A001 - PyTorch's name
    return _binary(arith.Pow, a, b)


def neg(a):
    return arith.Neg.apply(a)


negative = neg


def matmul(a, b):
    return arith.Matmul.apply(a, b)


mm = bmm = matmul


def maximum(a, b):
    return _binary(arith.Maximum, a, b)


def minimum(a, b):
    return _binary(arith.Minimum, a, b)


def where(condition, a, b):
    cond = condition._data if isinstance(condition, Tensor) else condition
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        # two numbers: the result gets PyTorch's dtype (float32 for floats), on cond's device
        a = tensor(a, device=condition.device if isinstance(condition, Tensor) else None)
    return arith.Where.apply(cond, _scalar(a), _scalar(b))


def exp(a):
    return elementwise.Exp.apply(a)


def log(a):
    return elementwise.Log.apply(a)


def sqrt(a):
    return elementwise.Sqrt.apply(a)


def abs(a):  # noqa: A001
    return elementwise.Abs.apply(a)


def tanh(a):
    return elementwise.Tanh.apply(a)


def sigmoid(a):
    return elementwise.Sigmoid.apply(a)


def relu(a):
    return elementwise.Relu.apply(a)


def gelu(a, approximate="none"):
    return elementwise.Gelu.apply(a, approximate=approximate)


def clamp(a, min=None, max=None):  # noqa: A002
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    return elementwise.Clamp.apply(a, _scalar(min), _scalar(max))


clip = clamp


def sum(a, dim=None, keepdim=False, dtype=None):  # noqa: A001
    out = reduce.Sum.apply(a, dim=dim, keepdim=keepdim)
    return out if dtype is None else out.to(dtype)


def mean(a, dim=None, keepdim=False):
    if not a.is_floating_point():
        raise RuntimeError(
            f"mean(): could not infer output dtype. Input dtype must be floating point, got {a.dtype}"
        )
    return reduce.Mean.apply(a, dim=dim, keepdim=keepdim)


def _correction(unbiased, correction):
    if correction is not None:
        return correction
    return 1 if unbiased in (None, True) else 0


def var(a, dim=None, unbiased=None, keepdim=False, *, correction=None):
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    return reduce.Var.apply(a, dim=dim, correction=_correction(unbiased, correction), keepdim=keepdim)


def std(a, dim=None, unbiased=None, keepdim=False, *, correction=None):
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    return reduce.Var.apply(a, dim=dim, correction=_correction(unbiased, correction), keepdim=keepdim,
                            std=True)


def _extreme(a, dim, keepdim, largest):
    if isinstance(dim, Tensor):
        return (maximum if largest else minimum)(a, dim)
    if dim is None:
        return reduce.MaxMin.apply(a, largest=largest)
    xp = array_module(a._data)
    d = reduce.wrap_dim(dim, a.ndim)
    idx = (xp.argmax if largest else xp.argmin)(a._data, axis=d)
    values = reduce.MaxMinDim.apply(a, idx, dim=d, keepdim=keepdim, largest=largest)
    indices = Tensor._make(xp.expand_dims(idx, d) if keepdim else idx)
    return values_indices(values, indices)


def max(a, dim=None, keepdim=False):  # noqa: A001
    """``max(x)``: the largest value; ``max(x, dim)``: (values, indices); ``max(x, y)``: elementwise."""
    return _extreme(a, dim, keepdim, True)


def min(a, dim=None, keepdim=False):  # noqa: A001
    return _extreme(a, dim, keepdim, False)


def amax(a, dim=None, keepdim=False):
    return reduce.MaxMin.apply(a, dim=dim, keepdim=keepdim, largest=True)


def amin(a, dim=None, keepdim=False):
    return reduce.MaxMin.apply(a, dim=dim, keepdim=keepdim, largest=False)


def logsumexp(a, dim, keepdim=False):
    return reduce.LogSumExp.apply(a, dim=dim, keepdim=keepdim)


def softmax(a, dim, dtype=None):
    a = a if dtype is None else a.to(dtype)
    return reduce.Softmax.apply(a, dim=dim)


def log_softmax(a, dim, dtype=None):
    a = a if dtype is None else a.to(dtype)
    return reduce.LogSoftmax.apply(a, dim=dim)


def _view_of(out, a):
    out._vc = a._vc  # a view shares its base's version counter, as in PyTorch
    return out


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(a, *shape):
    return _view_of(shape_ops.Reshape.apply(a, _shape_args(shape)), a)


view = reshape


def flatten(a, start_dim=0, end_dim=-1):
    if a.ndim == 0:
        return reshape(a, 1)
    s = reduce.wrap_dim(start_dim, a.ndim)
    e = reduce.wrap_dim(end_dim, a.ndim)
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    dims = a.shape
    new = dims[:s] + (int(np.prod(dims[s:e + 1])),) + dims[e + 1:]
    return reshape(a, new)


def permute(a, *dims):
    dims = tuple(reduce.wrap_dim(d, a.ndim) for d in _shape_args(dims))
    return _view_of(shape_ops.Permute.apply(a, dims), a)


def transpose(a, dim0, dim1):
    axes = list(range(a.ndim))
    d0, d1 = reduce.wrap_dim(dim0, a.ndim), reduce.wrap_dim(dim1, a.ndim)
    if axes:
        axes[d0], axes[d1] = axes[d1], axes[d0]
    return _view_of(shape_ops.Permute.apply(a, tuple(axes)), a)


swapaxes = transpose


def t(a):
    if a.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {a.ndim}D")
    return a if a.ndim < 2 else transpose(a, 0, 1)


def squeeze(a, dim=None):
    if dim is None:
        new = tuple(n for n in a.shape if n != 1)
    else:
        dims = {reduce.wrap_dim(d, a.ndim) for d in ((dim,) if isinstance(dim, int) else dim)}
        new = tuple(n for i, n in enumerate(a.shape) if not (i in dims and n == 1))
    return reshape(a, new)


def unsqueeze(a, dim):
    d = reduce.wrap_dim(dim, a.ndim + 1)
    return reshape(a, a.shape[:d] + (1,) + a.shape[d:])


def expand(a, *sizes):
    sizes = _shape_args(sizes)
    lead = len(sizes) - a.ndim
    if -1 in sizes[:_builtins.max(lead, 0)]:
        raise RuntimeError(
            f"expand: size -1 is not allowed in a new leading dimension (sizes {list(sizes)} for a "
            f"tensor of shape {list(a.shape)})"
        )
    new = tuple(a.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes))
    return _view_of(shape_ops.Expand.apply(a, new), a)


def expand_as(a, other):
    return expand(a, other.shape)


broadcast_to = expand


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("cat(): expected a non-empty list of Tensors")
    d = reduce.wrap_dim(dim, tensors[0].ndim)
    return shape_ops.Cat.apply(*tensors, dim=d)


concatenate = concat = cat


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    d = reduce.wrap_dim(dim, tensors[0].ndim + 1)
    return shape_ops.Stack.apply(*tensors, dim=d)


def index(a, idx):
    idx = _index_arrays(idx)
    out = shape_ops.Index.apply(a, idx)
    return out if shape_ops._is_advanced(idx) else _view_of(out, a)


def clone(a):
    return a.clone()


def masked_fill(a, mask, value):
    return where(mask, value, a)


# -------------------------------------------------------------------- no-gradient results
def _nograd(fn, a, b=None):
    x = a._data if isinstance(a, Tensor) else a
    y = b._data if isinstance(b, Tensor) else _scalar(b)
    return Tensor._make(fn(x, y))


def _xp(a):
    return array_module(a._data) if isinstance(a, Tensor) else np


def eq(a, b):
    return _nograd(_xp(a).equal, a, b)


def ne(a, b):
    return _nograd(_xp(a).not_equal, a, b)


def lt(a, b):
    return _nograd(_xp(a).less, a, b)


def le(a, b):
    return _nograd(_xp(a).less_equal, a, b)


def gt(a, b):
    return _nograd(_xp(a).greater, a, b)


def ge(a, b):
    return _nograd(_xp(a).greater_equal, a, b)


def logical_and(a, b):
    return _nograd(_xp(a).logical_and, a, b)


def logical_or(a, b):
    return _nograd(_xp(a).logical_or, a, b)


def logical_xor(a, b):
    return _nograd(_xp(a).logical_xor, a, b)


def logical_not(a):
    return Tensor._make(_xp(a).logical_not(a._data) if a.dtype.kind == "b" else ~a._data)


def floor_divide(a, b):
    return _nograd(_xp(a if isinstance(a, Tensor) else b).floor_divide, a, b)


def remainder(a, b):
    return _nograd(_xp(a if isinstance(a, Tensor) else b).remainder, a, b)


def equal(a, b):
    """True when both tensors have the same shape and values."""
    return a.shape == b.shape and bool((a._data == b._data).all())


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return bool(_xp(a).allclose(a._data, b._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return Tensor._make(_xp(a).isclose(a._data, b._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isnan(a):
    return Tensor._make(_xp(a).isnan(a._data))


def isfinite(a):
    return Tensor._make(_xp(a).isfinite(a._data))


def _arg(fn, a, dim, keepdim):
    xp = _xp(a)
    out = fn(a._data, axis=dim)
    if keepdim and dim is not None:
        out = xp.expand_dims(out, dim)
    return Tensor._make(xp.asarray(out, dtype=np.int64))


def argmax(a, dim=None, keepdim=False):
    return _arg(_xp(a).argmax, a, dim, keepdim)


def argmin(a, dim=None, keepdim=False):
    return _arg(_xp(a).argmin, a, dim, keepdim)


def any(a, dim=None, keepdim=False):  # noqa: A001
    return Tensor._make(_xp(a).any(a._data, axis=dim, keepdims=keepdim))


def all(a, dim=None, keepdim=False):  # noqa: A001
    return Tensor._make(_xp(a).all(a._data, axis=dim, keepdims=keepdim))


def numel(a):
    return a.numel()


def is_floating_point(a):
    return a.is_floating_point()


# -------------------------------------------------------------------- Tensor methods
def _install_methods():
    def method(fn):
        return lambda self, *args, **kwargs: fn(self, *args, **kwargs)

    names = [
        "add", "sub", "mul", "div", "pow", "neg", "matmul", "mm", "bmm", "maximum", "minimum", "exp",
        "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "clamp", "clip", "sum", "mean", "var",
        "std", "max", "min", "amax", "amin", "logsumexp", "softmax", "log_softmax", "reshape",
        "view", "flatten", "permute", "transpose", "t", "squeeze", "unsqueeze", "expand",
        "expand_as", "eq", "ne", "lt", "le", "gt", "ge", "argmax", "argmin", "masked_fill",
        "isnan", "isfinite", "logical_not", "logical_and", "logical_or", "multiply", "divide",
        "subtract", "true_divide", "negative", "swapaxes", "floor_divide", "remainder", "any", "all",
    ]
    g = globals()
    for name in names:
        if not hasattr(Tensor, name):
            setattr(Tensor, name, method(g[name]))
    Tensor.view_as = lambda self, other: reshape(self, other.shape)
    Tensor.reshape_as = Tensor.view_as
    Tensor.where = lambda self, condition, other: where(condition, self, other)
    Tensor.square = lambda self: mul(self, self)
    Tensor.equal = equal
    Tensor.allclose = allclose
    Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
    Tensor.gelu = lambda self, approximate="none": gelu(self, approximate)


_install_methods()


__all__ = [
    name for name, value in list(globals().items())
    if not name.startswith("_") and callable(value) and not isinstance(value, type)
    and getattr(value, "__module__", "").startswith("ddpgrad.ops")
] + ["values_indices"]
