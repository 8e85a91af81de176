"""The functional API: ``ddpgrad.exp(x)``, ``ddpgrad.cat([...])``, with PyTorch's names and arguments.

Each function prepares its operands (type promotion, dims, views) and applies one op class from
the modules beside it; ``methods.py`` binds them onto ``Tensor``.
"""

from __future__ import annotations

import builtins as _builtins
import collections
import functools

import numpy as np

from ..autograd import grad_mode
from ..autograd.function import Function
from ..backend import CPU, array_module, get_default_dtype, to_device
from ..tensor import Tensor, _index_arrays
from . import arith, elementwise, reduce, scan
from . import gather as gather_ops
from . import shape as shape_ops
from .promotion import floating, promote, promote_types, result_type  # noqa: F401  (the last two: PyTorch names)
from .creation import (  # noqa: F401  (re-exported)
    arange, as_tensor, empty, empty_like, eye, from_numpy, full, full_like, linspace, ones,
    ones_like, rand, rand_like, randint, randn, randn_like, randperm, tensor, zeros, zeros_like,
)

values_indices = collections.namedtuple("values_indices", ["values", "indices"])


def _scalar(x):
    """NumPy scalars become Python numbers and raw arrays tensors, so that both promote as in PyTorch."""
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "__array_interface__") or hasattr(x, "__cuda_array_interface__"):
        return Tensor._make(x)
    return x


def _binary(fn, a, b, **kwargs):
    """Apply a binary op after PyTorch's type promotion (see ``promotion.py``)."""
    if not isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            a = tensor(a)
        else:
            a = _scalar(a)
    elif not isinstance(b, Tensor):
        b = _scalar(b)
        if type(b) is float and a._data.dtype.kind == "f" or type(b) is int and a._data.dtype.kind in "fiu":
            return fn.apply(a, b, **kwargs)  # the common case: a number never widens the tensor here
    if not (isinstance(a, Tensor) and isinstance(b, Tensor) and a._data.dtype == b._data.dtype):
        a, b, _ = promote(a, b)
    return fn.apply(a, b, **kwargs)


def _as_floats(a, b):
    """Both operands of a true division: integer and bool tensors take the default float dtype."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = tensor(a)
    target = result_type(_scalar(a), _scalar(b))
    if target.kind not in "fc":
        a = a.to(get_default_dtype()) if isinstance(a, Tensor) else a
        b = b.to(get_default_dtype()) if isinstance(b, Tensor) else b
    return a, b


def _with_out(fn):
    """Accept PyTorch's ``out=``: the result is written into ``out`` (resized when its shape differs)."""
    @functools.wraps(fn)
    def op(*args, out=None, **kwargs):
        result = fn(*args, **kwargs)
        if out is None:
            return result
        return write_out(fn.__name__, result, out)

    return op


def write_out(name, result, out):
    if grad_mode.state.enabled and (result.requires_grad or out.requires_grad):
        raise RuntimeError(
            f"{name}(): functions with out=... arguments don't support automatic differentiation, but "
            f"one of the arguments requires grad; drop out= (y = {name}(...)) or use no_grad()"
        )
    data = result._data.astype(out.dtype, copy=False) if result.dtype != out.dtype else result._data
    if tuple(out.shape) == tuple(data.shape):
        array_module(data).copyto(out._own_array(), data)
    else:
        out._data = data.copy()
    return out._bump()


@_with_out
def add(input, other, alpha=1):
    return _binary(arith.Add, input, other if alpha == 1 else other * alpha)


@_with_out
def sub(input, other, alpha=1):
    return _binary(arith.Sub, input, other if alpha == 1 else other * alpha)


@_with_out
def mul(input, other):
    return _binary(arith.Mul, input, other)


@_with_out
def div(input, other, *, rounding_mode=None):
    """``a / b``; ``rounding_mode='trunc'`` or ``'floor'`` rounds the quotient (no gradient)."""
    if rounding_mode is None:
        return _binary(arith.Div, *_as_floats(input, other))
    if rounding_mode == "floor":
        return floor_divide(input, other)
    if rounding_mode != "trunc":
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found {rounding_mode!r}")
    q = floor_divide(input, other)
    r = remainder(input, other)
    xp = _xp(q)
    q._data = xp.where((r._data != 0) & ((q._data < 0)), q._data + 1, q._data) \
        if q.dtype.kind in "iu" else xp.trunc(_binary(arith.Div, *_as_floats(input, other)).detach()._data)
    return q


true_divide = divide = div
multiply = mul
subtract = sub


@_with_out
def pow(input, exponent):  # noqa: A001 - PyTorch's name
    return _binary(arith.Pow, input, exponent)


@_with_out
def neg(input):
    return arith.Neg.apply(input)


negative = neg


@_with_out
def matmul(input, other):
    return arith.Matmul.apply(input, other)


mm = bmm = matmul


@_with_out
def maximum(input, other):
    return _binary(arith.Maximum, input, other)


@_with_out
def minimum(input, other):
    return _binary(arith.Minimum, input, other)


def where(condition, input=None, other=None):  # noqa: A002
    """``input`` where ``condition`` holds, else ``other`` (promoted as PyTorch); ``where(c)``: ``nonzero``."""
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    cond = condition._data if isinstance(condition, Tensor) else condition
    a, b = _scalar(input), _scalar(other)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        # two numbers: the result gets PyTorch's dtype (float32 for floats), on cond's device
        a = tensor(a, device=condition.device if isinstance(condition, Tensor) else None)
    if not (isinstance(a, Tensor) and isinstance(b, Tensor) and a._data.dtype == b._data.dtype):
        a, b, _ = promote(a, b)
    return arith.Where.apply(cond, a, b)


@_with_out
def exp(input):
    return elementwise.Exp.apply(floating(input))


@_with_out
def log(input):
    return elementwise.Log.apply(floating(input))


@_with_out
def sqrt(input):
    return elementwise.Sqrt.apply(floating(input))


@_with_out
def abs(input):  # noqa: A001
    return elementwise.Abs.apply(input)


@_with_out
def tanh(input):
    return elementwise.Tanh.apply(floating(input))


@_with_out
def sigmoid(input):
    return elementwise.Sigmoid.apply(floating(input))


def relu(input):
    return elementwise.Relu.apply(input)


def gelu(input, approximate="none"):
    return elementwise.Gelu.apply(input, approximate=approximate)


@_with_out
def clamp(input, min=None, max=None):  # noqa: A002
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    return elementwise.Clamp.apply(input, _scalar(min), _scalar(max))


clip = clamp


def sum(input, dim=None, keepdim=False, dtype=None):  # noqa: A001
    out = reduce.Sum.apply(input, dim=dim, keepdim=keepdim)
    return out if dtype is None else out.to(dtype)


def mean(input, dim=None, keepdim=False):
    if not input.is_floating_point():
        raise RuntimeError(
            f"mean(): could not infer output dtype. Input dtype must be floating point, got {input.dtype}"
        )
    return reduce.Mean.apply(input, dim=dim, keepdim=keepdim)


def _correction(unbiased, correction):
    if correction is not None:
        return correction
    return 1 if unbiased in (None, True) else 0


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    return reduce.Var.apply(input, dim=dim, correction=_correction(unbiased, correction), keepdim=keepdim)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    return reduce.Var.apply(input, dim=dim, correction=_correction(unbiased, correction), keepdim=keepdim,
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


def max(input, dim=None, keepdim=False):  # noqa: A001
    """``max(x)``: the largest value; ``max(x, dim)``: (values, indices); ``max(x, y)``: elementwise."""
    return _extreme(input, dim, keepdim, True)


def min(input, dim=None, keepdim=False):  # noqa: A001
    return _extreme(input, dim, keepdim, False)


def amax(input, dim=None, keepdim=False):
    return reduce.MaxMin.apply(input, dim=dim, keepdim=keepdim, largest=True)


def amin(input, dim=None, keepdim=False):
    return reduce.MaxMin.apply(input, dim=dim, keepdim=keepdim, largest=False)


def logsumexp(input, dim, keepdim=False):
    return reduce.LogSumExp.apply(input, dim=dim, keepdim=keepdim)


def softmax(input, dim, dtype=None):
    input = input if dtype is None else input.to(dtype)
    return reduce.Softmax.apply(input, dim=dim)


def log_softmax(input, dim, dtype=None):
    input = input if dtype is None else input.to(dtype)
    return reduce.LogSoftmax.apply(input, dim=dim)


def _view_of(out, a, replay, region):
    """Mark ``out`` as a view of ``a``: it shares ``a``'s version counter, as in PyTorch, and knows
    how to find itself again in its base (``replay`` on tensors, ``region`` on arrays) so that
    in-place changes through the view reach the base's history (see ``inplace.py``)."""
    out._vc = a._vc
    if a._view is not None:
        base, replay0, region0, _ = a._view
        out._view = (base, lambda b: replay(replay0(b)), lambda x: region(region0(x)), base.grad_fn)
    else:
        out._view = (a, replay, region, a.grad_fn)
    return out


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(input, *shape):
    shape = _shape_args(shape)
    out = shape_ops.Reshape.apply(input, shape)
    if not _xp(input).may_share_memory(out._data, input._data):
        return out  # NumPy had to copy (a non-contiguous input)
    return _view_of(out, input, lambda b: reshape(b, shape), lambda x: x.reshape(shape))


view = reshape


def flatten(input, start_dim=0, end_dim=-1):
    if input.ndim == 0:
        return reshape(input, 1)
    s = reduce.wrap_dim(start_dim, input.ndim)
    e = reduce.wrap_dim(end_dim, input.ndim)
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    dims = input.shape
    new = dims[:s] + (int(np.prod(dims[s:e + 1])),) + dims[e + 1:]
    return reshape(input, new)


def permute(input, *dims):
    dims = tuple(reduce.wrap_dim(d, input.ndim) for d in _shape_args(dims))
    return _view_of(shape_ops.Permute.apply(input, dims), input, lambda b: permute(b, dims), lambda x: x.transpose(dims))


def transpose(input, dim0, dim1):
    axes = list(range(input.ndim))
    d0, d1 = reduce.wrap_dim(dim0, input.ndim), reduce.wrap_dim(dim1, input.ndim)
    if axes:
        axes[d0], axes[d1] = axes[d1], axes[d0]
    return permute(input, axes)


swapaxes = transpose


def t(input):
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D")
    return input if input.ndim < 2 else transpose(input, 0, 1)


def squeeze(input, dim=None):
    if dim is None:
        new = tuple(n for n in input.shape if n != 1)
    else:
        dims = {reduce.wrap_dim(d, input.ndim) for d in ((dim,) if isinstance(dim, int) else dim)}
        new = tuple(n for i, n in enumerate(input.shape) if not (i in dims and n == 1))
    return reshape(input, new)


def unsqueeze(input, dim):
    d = reduce.wrap_dim(dim, input.ndim + 1)
    return reshape(input, input.shape[:d] + (1,) + input.shape[d:])


def expand(input, *sizes):
    sizes = _shape_args(sizes)
    lead = len(sizes) - input.ndim
    if -1 in sizes[:_builtins.max(lead, 0)]:
        raise RuntimeError(
            f"expand: size -1 is not allowed in a new leading dimension (sizes {list(sizes)} for a "
            f"tensor of shape {list(input.shape)})"
        )
    new = tuple(input.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes))
    xp = _xp(input)
    return _view_of(shape_ops.Expand.apply(input, new), input, lambda b: expand(b, new), lambda x: xp.broadcast_to(x, new))


def expand_as(input, other):
    return expand(input, other.shape)


broadcast_to = expand


@_with_out
def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("cat(): expected a non-empty list of Tensors")
    d = reduce.wrap_dim(dim, tensors[0].ndim)
    return shape_ops.Cat.apply(*tensors, dim=d)


concatenate = concat = cat


@_with_out
def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    d = reduce.wrap_dim(dim, tensors[0].ndim + 1)
    return shape_ops.Stack.apply(*tensors, dim=d)


def _is_view_index(idx):
    items = idx if isinstance(idx, tuple) else (idx,)
    for i in items:
        if not (i is None or i is Ellipsis or isinstance(i, (int, slice, np.integer))) or isinstance(i, bool):
            return False
    return True


def index(input, idx):
    """``a[idx]``: a view for ints, slices, None and ``...``; a copy for index arrays and masks."""
    idx = _index_arrays(idx)
    if not _is_view_index(idx):
        return shape_ops.Index.apply(input, idx)
    items = idx if isinstance(idx, tuple) else (idx,)
    if not _builtins.any(i is Ellipsis for i in items):
        idx = items + (Ellipsis,)  # NumPy then returns a 0-d view, not a scalar copy
    return _view_of(shape_ops.Index.apply(input, idx), input, lambda b: index(b, idx), lambda x: x[idx])


def clone(input):
    return input.clone()


def masked_fill(input, mask, value):
    return where(mask, value, input)


_dims = reduce  # ``scatter`` has an argument named ``reduce``
_index_view = index  # ``select`` and friends have an argument named ``index``


# -------------------------------------------------------------------- the elementwise family
def _floating_unary(cls):
    def op(input, *, out=None):  # noqa: A002 - PyTorch's argument name
        result = cls.apply(floating(input))
        return result if out is None else write_out(op.__name__, result, out)

    op.__name__ = op.__qualname__ = cls.__name__.lower()
    op.__doc__ = f"Elementwise {cls.__doc__}; integer inputs give the default float dtype."
    return op


sin = _floating_unary(elementwise.Sin)
cos = _floating_unary(elementwise.Cos)
tan = _floating_unary(elementwise.Tan)
asin = arcsin = _floating_unary(elementwise.Asin)
acos = arccos = _floating_unary(elementwise.Acos)
atan = arctan = _floating_unary(elementwise.Atan)
sinh = _floating_unary(elementwise.Sinh)
cosh = _floating_unary(elementwise.Cosh)
asinh = arcsinh = _floating_unary(elementwise.Asinh)
acosh = arccosh = _floating_unary(elementwise.Acosh)
atanh = arctanh = _floating_unary(elementwise.Atanh)
exp2 = _floating_unary(elementwise.Exp2)
expm1 = _floating_unary(elementwise.Expm1)
log1p = _floating_unary(elementwise.Log1p)
log2 = _floating_unary(elementwise.Log2)
log10 = _floating_unary(elementwise.Log10)
rsqrt = _floating_unary(elementwise.Rsqrt)
reciprocal = _floating_unary(elementwise.Reciprocal)
erf = _floating_unary(elementwise.Erf)
erfc = _floating_unary(elementwise.Erfc)
frac = _floating_unary(elementwise.Frac)
silu = _floating_unary(elementwise.Silu)
mish = _floating_unary(elementwise.Mish)
logsigmoid = _floating_unary(elementwise.LogSigmoid)
softsign = _floating_unary(elementwise.Softsign)
tanhshrink = _floating_unary(elementwise.Tanhshrink)
hardsigmoid = _floating_unary(elementwise.Hardsigmoid)
hardswish = _floating_unary(elementwise.Hardswish)


def square(input):  # noqa: A002
    return elementwise.Square.apply(input)


def _rounding(cls):
    def op(input):  # noqa: A002
        if input.dtype.kind in "iub":
            return input.clone()  # already whole numbers
        return cls.apply(input)

    op.__name__ = op.__qualname__ = cls.__name__.lower()
    op.__doc__ = f"Elementwise {cls.__doc__} (gradient 0)."
    return op


floor = _rounding(elementwise.Floor)
ceil = _rounding(elementwise.Ceil)
trunc = fix = _rounding(elementwise.Trunc)


def round(input, *, decimals=0):  # noqa: A001,A002
    """Round half to even, to ``decimals`` places (gradient 0)."""
    if input.dtype.kind in "iub" and decimals >= 0:
        return input.clone()
    return elementwise.Round.apply(input, decimals=decimals)


def sign(input):  # noqa: A002
    if input.dtype.kind == "b":
        return input.clone()
    return elementwise.Sign.apply(input)


sgn = sign


def softplus(input, beta=1.0, threshold=20.0):  # noqa: A002
    return elementwise.Softplus.apply(floating(input), beta=beta, threshold=threshold)


def leaky_relu(input, negative_slope=0.01):  # noqa: A002
    return elementwise.LeakyRelu.apply(input, negative_slope=negative_slope)


def elu(input, alpha=1.0):  # noqa: A002
    return elementwise.Elu.apply(floating(input), alpha=alpha)


_SELU_ALPHA = 1.6732632423543772848170429916717  # from Klambauer et al. (2017), as PyTorch
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input):  # noqa: A002
    return elementwise.Elu.apply(floating(input), alpha=_SELU_ALPHA, scale=_SELU_SCALE)


def celu(input, alpha=1.0):  # noqa: A002
    return elementwise.Elu.apply(floating(input), alpha=alpha, input_scale=1.0 / alpha)


def hardtanh(input, min_val=-1.0, max_val=1.0):  # noqa: A002
    return elementwise.Hardtanh.apply(input, min_val=min_val, max_val=max_val)


def relu6(input):  # noqa: A002
    return hardtanh(input, 0.0, 6.0)


def atan2(input, other):  # noqa: A002
    return _binary(elementwise.Atan2, *_as_floats(input, other))


arctan2 = atan2


def clamp_min(input, min):  # noqa: A002
    return clamp(input, min=min)


def clamp_max(input, max):  # noqa: A002
    return clamp(input, max=max)


def lerp(input, end, weight):  # noqa: A002
    """``input + weight * (end - input)``."""
    return input + weight * (end - input)


def addcmul(input, tensor1, tensor2, *, value=1):  # noqa: A002
    return input + value * (tensor1 * tensor2)


def addcdiv(input, tensor1, tensor2, *, value=1):  # noqa: A002
    return input + value * (tensor1 / tensor2)


def hypot(input, other):  # noqa: A002
    return sqrt(input * input + other * other)


def logaddexp(input, other):  # noqa: A002
    m = maximum(input, other).detach()
    return m + log(exp(input - m) + exp(other - m))


def xlogy(input, other):  # noqa: A002
    return where(input == 0, 0.0, input * log(other))


def outer(input, vec2):  # noqa: A002
    return mul(unsqueeze(input, 1), unsqueeze(vec2, 0))


ger = outer


def dot(input, other):  # noqa: A002
    if input.ndim != 1 or other.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {input.ndim}D and {other.ndim}D tensors")
    return matmul(input, other)


inner = vdot = dot


def mv(input, vec):  # noqa: A002
    return matmul(input, vec)


def addmm(input, mat1, mat2, *, beta=1, alpha=1):  # noqa: A002
    return beta * input + alpha * matmul(mat1, mat2)


# -------------------------------------------------------------------- reductions and scans
def prod(input, dim=None, keepdim=False, *, dtype=None):  # noqa: A002
    a = input if dtype is None else input.to(dtype)
    if dim is not None:
        dim = reduce.wrap_dim(dim, a.ndim)
    return scan.Prod.apply(a, dim=dim, keepdim=keepdim)


def cumsum(input, dim, *, dtype=None):  # noqa: A002
    a = input if dtype is None else input.to(dtype)
    if a.dtype.kind in "biu" and dtype is None:
        a = a.long()
    return scan.Cumsum.apply(a, dim=reduce.wrap_dim(dim, a.ndim))


def cumprod(input, dim, *, dtype=None):  # noqa: A002
    a = input if dtype is None else input.to(dtype)
    if a.dtype.kind in "biu" and dtype is None:
        a = a.long()
    return scan.Cumprod.apply(a, dim=reduce.wrap_dim(dim, a.ndim))


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):  # noqa: A002
    """The vector p-norm (``'fro'``: 2-norm of all entries) over ``dim``."""
    a = input if dtype is None else input.to(dtype)
    if p in ("fro", None):
        p = 2.0
    if p == "nuc":
        raise NotImplementedError("norm(p='nuc') (the nuclear norm) is not supported")
    return reduce.Norm.apply(floating(a), p=float(p), dim=dim, keepdim=keepdim)


def dist(input, other, p=2):  # noqa: A002
    return norm(input - other, p)


# -------------------------------------------------------------------- index and order
def gather(input, dim, index, *, sparse_grad=False):  # noqa: A002
    """``out[i][j] = input[index[i][j]][j]`` for dim 0, and so on (PyTorch's gather)."""
    d = reduce.wrap_dim(dim, input.ndim)
    return gather_ops.Gather.apply(input, index._data, dim=d)


def scatter(input, dim, index, src=None, *, value=None, reduce=None):  # noqa: A002
    """A copy of ``input`` with ``src`` (or ``value``) written at ``index`` along ``dim``."""
    if reduce is not None:
        if reduce != "add":
            raise NotImplementedError(f"scatter(reduce={reduce!r}): only 'add' is supported; use scatter_add")
        return scatter_add(input, dim, index, src)
    if src is None:
        src = value
    if src is None:
        raise TypeError("scatter() needs src (a tensor) or value (a number)")
    d = _dims.wrap_dim(dim, input.ndim)
    if isinstance(src, Tensor):
        src = src.to(input.dtype) if src.dtype != input.dtype else src
    else:
        src = _scalar(src)
    return gather_ops.Scatter.apply(input, index._data, src, dim=d)


def scatter_add(input, dim, index, src):  # noqa: A002
    d = _dims.wrap_dim(dim, input.ndim)
    src = src.to(input.dtype) if src.dtype != input.dtype else src
    return gather_ops.Scatter.apply(input, index._data, src, dim=d, add=True)


def index_select(input, dim, index):  # noqa: A002
    d = reduce.wrap_dim(dim, input.ndim)
    return shape_ops.Index.apply(input, (slice(None),) * d + (index._data.reshape(-1),))


def index_add(input, dim, index, source, *, alpha=1):  # noqa: A002
    """A copy of ``input`` with ``alpha * source`` added at ``index`` along ``dim``."""
    d = reduce.wrap_dim(dim, input.ndim)
    return _IndexAdd.apply(input, source * alpha if alpha != 1 else source,
                           index=(slice(None),) * d + (index._data,))


def index_fill(input, dim, index, value):  # noqa: A002
    d = reduce.wrap_dim(dim, input.ndim)
    mask = zeros(input.shape[d], dtype=np.bool_, device=input.device)
    mask._data[index._data] = True
    shape = [1] * input.ndim
    shape[d] = input.shape[d]
    return where(reshape(mask, shape), value, input)


def masked_select(input, mask):  # noqa: A002
    return index(input, expand(mask, input.shape) if mask.shape != input.shape else mask)


def take(input, index):  # noqa: A002
    return shape_ops.Index.apply(reshape(input, -1), index._data)


def take_along_dim(input, indices, dim):  # noqa: A002
    d = reduce.wrap_dim(dim, input.ndim)
    return gather_ops.Gather.apply(input, indices._data, dim=d)


def sort(input, dim=-1, descending=False, stable=False):  # noqa: A002
    d = reduce.wrap_dim(dim, input.ndim)
    idx = _argsort_array(input._data, d, descending)
    return values_indices(gather_ops.TakeAlong.apply(input, idx, dim=d), Tensor._make(idx))


def _argsort_array(data, dim, descending):
    xp = array_module(data)
    if data.ndim == 0:
        return xp.zeros((), dtype=np.int64)
    if descending:
        # a stable descending order: sort the reversed axis ascending on negated keys
        keys = -data if data.dtype.kind in "fi" else ~data if data.dtype.kind == "b" else data.max() - data
        return xp.argsort(keys, axis=dim, kind="stable").astype(np.int64)
    return xp.argsort(data, axis=dim, kind="stable").astype(np.int64)


def argsort(input, dim=-1, descending=False, stable=False):  # noqa: A002
    return sort(input, dim, descending, stable).indices


def msort(input):  # noqa: A002
    return sort(input, 0).values


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    d = reduce.wrap_dim(dim, input.ndim)
    n = input.shape[d] if input.ndim else 1
    if not 0 <= k <= n:
        raise RuntimeError(f"topk: selected index k={k} out of range for a dimension of size {n}")
    order = _argsort_array(input._data, d, largest)
    xp = array_module(order)
    idx = order[(slice(None),) * d + (slice(0, k),)] if input.ndim else order
    return values_indices(gather_ops.TakeAlong.apply(input, idx, dim=d), Tensor._make(idx))


def kthvalue(input, k, dim=-1, keepdim=False):  # noqa: A002
    values, indices = sort(input, dim)
    d = reduce.wrap_dim(dim, input.ndim)
    v = select(values, d, k - 1)
    i = select(indices, d, k - 1)
    if keepdim:
        v, i = unsqueeze(v, d), unsqueeze(i, d)
    return values_indices(v, i)


def median(input, dim=None, keepdim=False):  # noqa: A002
    """The lower median (as PyTorch); with ``dim``: (values, indices)."""
    if dim is None:
        flat = reshape(input, -1)
        return kthvalue(flat, (flat.shape[0] + 1) // 2, 0).values
    n = input.shape[reduce.wrap_dim(dim, input.ndim)]
    return kthvalue(input, (n + 1) // 2, dim, keepdim)


# -------------------------------------------------------------------- split, join, rearrange
def select(input, dim, index):  # noqa: A002
    d = reduce.wrap_dim(dim, input.ndim)
    return _index_view(input, (slice(None),) * d + (index,))


def narrow(input, dim, start, length):  # noqa: A002
    d = reduce.wrap_dim(dim, input.ndim)
    return _index_view(input, (slice(None),) * d + (slice(start, start + length),))


def split(tensor, split_size_or_sections, dim=0):
    """Views of consecutive pieces along ``dim``: equal ``split_size`` (the last may be smaller) or the given sizes."""
    d = reduce.wrap_dim(dim, tensor.ndim)
    n = tensor.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0 and n:
            raise RuntimeError(f"split: split_size must be positive, got {step}")
        sizes = [_builtins.min(step, n - i) for i in range(0, n, step)] if n else [0]
    else:
        sizes = list(split_size_or_sections)
        if _builtins.sum(sizes) != n:
            raise RuntimeError(
                f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's size at "
                f"dimension {d}), but got split_sizes={sizes}"
            )
    pieces, start = [], 0
    for size in sizes:
        pieces.append(narrow(tensor, d, start, size))
        start += size
    return tuple(pieces)


def tensor_split(input, indices_or_sections, dim=0):  # noqa: A002
    d = reduce.wrap_dim(dim, input.ndim)
    n = input.shape[d]
    if isinstance(indices_or_sections, int):
        q, r = divmod(n, indices_or_sections)
        sizes = [q + 1] * r + [q] * (indices_or_sections - r)
    else:
        bounds = [0] + list(indices_or_sections) + [n]
        sizes = [_builtins.max(0, b - a) for a, b in zip(bounds, bounds[1:])]
    return split(input, sizes, d)


def chunk(input, chunks, dim=0):  # noqa: A002
    """At most ``chunks`` views of size ceil(n / chunks) along ``dim``."""
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    n = input.shape[reduce.wrap_dim(dim, input.ndim)]
    return split(input, _builtins.max(1, -(-n // chunks)), dim)


def unbind(input, dim=0):  # noqa: A002
    d = reduce.wrap_dim(dim, input.ndim)
    return tuple(select(input, d, i) for i in range(input.shape[d]))


def flip(input, dims):  # noqa: A002
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return shape_ops.Flip.apply(input, dims=tuple(reduce.wrap_dim(d, input.ndim) for d in dims))


def fliplr(input):  # noqa: A002
    return flip(input, 1)


def flipud(input):  # noqa: A002
    return flip(input, 0)


def roll(input, shifts, dims=None):  # noqa: A002
    if isinstance(shifts, (list, tuple)):
        shifts = tuple(shifts)
    if isinstance(dims, (list, tuple)):
        dims = tuple(reduce.wrap_dim(d, input.ndim) for d in dims)
    elif dims is not None:
        dims = reduce.wrap_dim(dims, input.ndim)
    return shape_ops.Roll.apply(input, shifts, dims=dims)


def tile(input, dims):  # noqa: A002
    dims = tuple(dims)
    if len(dims) < input.ndim:
        dims = (1,) * (input.ndim - len(dims)) + dims
    return shape_ops.Repeat.apply(input, dims)


def repeat_interleave(input, repeats, dim=None, *, output_size=None):  # noqa: A002
    """Each element repeated ``repeats`` times (an int, or one count per element) along ``dim``."""
    a = reshape(input, -1) if dim is None else input
    d = 0 if dim is None else reduce.wrap_dim(dim, input.ndim)
    counts = repeats._data if isinstance(repeats, Tensor) else repeats
    if hasattr(counts, "shape"):
        counts = np.asarray(to_device(counts, CPU))  # CuPy's repeat takes only host counts
    idx = to_device(np.repeat(np.arange(a.shape[d]), counts), a.device)
    return index_select(a, d, Tensor._make(idx))


def movedim(input, source, destination):  # noqa: A002
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    src = [reduce.wrap_dim(s, input.ndim) for s in src]
    dst = [reduce.wrap_dim(s, input.ndim) for s in dst]
    order = [i for i in range(input.ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return permute(input, order)


moveaxis = movedim


def tril(input, diagonal=0):  # noqa: A002
    xp = _xp(input)
    keep = xp.tril(xp.ones(input.shape[-2:], dtype=bool), diagonal)
    return where(Tensor._make(keep), input, 0)


def triu(input, diagonal=0):  # noqa: A002
    xp = _xp(input)
    keep = xp.triu(xp.ones(input.shape[-2:], dtype=bool), diagonal)
    return where(Tensor._make(keep), input, 0)


def diagonal(input, offset=0, dim1=0, dim2=1):  # noqa: A002
    n, m = input.shape[dim1], input.shape[dim2]
    rows = np.arange(_builtins.max(0, -offset), _builtins.min(n, m - offset))
    moved = movedim(input, (dim1, dim2), (-2, -1))
    return moved[..., Tensor._make(to_device(rows, input.device)), Tensor._make(to_device(rows + offset, input.device))]


def diag(input, diagonal=0):  # noqa: A002
    if input.ndim == 2:
        return globals()["diagonal"](input, diagonal)
    n = input.shape[0] + _builtins.abs(diagonal)
    out = zeros(n, n, dtype=input.dtype, device=input.device)
    rows = np.arange(input.shape[0]) + _builtins.max(0, -diagonal)
    return _IndexAdd.apply(out, input, index=(to_device(rows, input.device), to_device(rows + diagonal, input.device)))


def trace(input):  # noqa: A002
    return sum(diagonal(input))


def einsum(equation, *operands):
    """Einstein summation: ``einsum('ij,jk->ik', a, b)``; ``...`` and implicit outputs allowed."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    inputs, output = _parse_einsum(equation.replace(" ", ""), operands)
    return shape_ops.Einsum.apply(*operands, inputs=tuple(inputs), output=output)


def _parse_einsum(equation, operands):
    lhs, arrow, rhs = equation.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != len(operands):
        raise RuntimeError(f"einsum(): {len(inputs)} operands in the equation {equation!r}, {len(operands)} given")
    used = set(equation) - set(".,->")
    spare = iter(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in used)
    ellipsis = ""
    if "..." in equation:
        width = _builtins.max(op.ndim - (len(s) - 3) for s, op in zip(inputs, operands) if "..." in s)
        ellipsis = "".join(next(spare) for _ in range(width))
        inputs = [s.replace("...", ellipsis[width - (op.ndim - (len(s) - 3)):]) if "..." in s else s
                  for s, op in zip(inputs, operands)]
    if arrow:
        output = rhs.replace("...", ellipsis)
    else:
        letters = "".join(inputs)
        output = ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ellipsis))
    for s, op in zip(inputs, operands):
        if len(s) != op.ndim:
            raise RuntimeError(f"einsum(): the subscripts {s!r} do not fit an operand of shape {list(op.shape)}")
    return inputs, output


class _IndexAdd(Function):
    """``a`` with ``value`` added at ``index`` (repeated positions accumulate)."""

    @staticmethod
    def forward(ctx, a, value, index=None):
        ctx.index = index
        out = a.copy()
        array_module(a).add.at(out, index, value)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad, grad[ctx.index]


# -------------------------------------------------------------------- no-gradient results
def _nograd(fn, a, b=None):
    x = a._data if isinstance(a, Tensor) else a
    y = b._data if isinstance(b, Tensor) else _scalar(b)
    return Tensor._make(fn(x, y))


def _xp(a):
    return array_module(a._data) if isinstance(a, Tensor) else np


def eq(input, other):
    return _nograd(_xp(input).equal, input, other)


def ne(input, other):
    return _nograd(_xp(input).not_equal, input, other)


def lt(input, other):
    return _nograd(_xp(input).less, input, other)


def le(input, other):
    return _nograd(_xp(input).less_equal, input, other)


def gt(input, other):
    return _nograd(_xp(input).greater, input, other)


def ge(input, other):
    return _nograd(_xp(input).greater_equal, input, other)


def logical_and(input, other):
    return _nograd(_xp(input).logical_and, input, other)


def logical_or(input, other):
    return _nograd(_xp(input).logical_or, input, other)


def logical_xor(input, other):
    return _nograd(_xp(input).logical_xor, input, other)


def logical_not(input):
    return Tensor._make(_xp(input).logical_not(input._data) if input.dtype.kind == "b" else ~input._data)


def floor_divide(input, other):
    """``a // b`` rounded toward minus infinity (no gradient, as PyTorch)."""
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        input = tensor(input)
    input, other, _ = promote(_scalar(input), _scalar(other))
    return _nograd(_xp(input if isinstance(input, Tensor) else other).floor_divide, input, other)


def remainder(input, other):
    """``a - floor(a / b) * b``: the sign of ``b``, as Python's ``%``."""
    return _binary(elementwise.Remainder, input, other)


def fmod(input, other):
    """``a - trunc(a / b) * b``: the sign of ``a``, as C's ``fmod``."""
    return _binary(elementwise.Remainder, input, other, truncate=True)


def equal(input, other):
    """True when both tensors have the same shape and values."""
    return input.shape == other.shape and bool((input._data == other._data).all())


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    return bool(_xp(input).allclose(input._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    return Tensor._make(_xp(input).isclose(input._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isnan(input):
    return Tensor._make(_xp(input).isnan(input._data))


def isfinite(input):
    return Tensor._make(_xp(input).isfinite(input._data))


def _arg(fn, a, dim, keepdim):
    xp = _xp(a)
    out = fn(a._data, axis=dim)
    if keepdim and dim is not None:
        out = xp.expand_dims(out, dim)
    return Tensor._make(xp.asarray(out, dtype=np.int64))


def argmax(input, dim=None, keepdim=False):
    return _arg(_xp(input).argmax, input, dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    return _arg(_xp(input).argmin, input, dim, keepdim)


def any(input, dim=None, keepdim=False):  # noqa: A001
    return Tensor._make(_xp(input).any(input._data, axis=dim, keepdims=keepdim))


def all(input, dim=None, keepdim=False):  # noqa: A001
    return Tensor._make(_xp(input).all(input._data, axis=dim, keepdims=keepdim))


def isinf(input):
    return Tensor._make(_xp(input).isinf(input._data))


def isposinf(input):
    return Tensor._make(_xp(input).isposinf(input._data))


def isneginf(input):
    return Tensor._make(_xp(input).isneginf(input._data))


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    """Replace NaN and infinities (no gradient through the replaced entries' positions' values)."""
    xp = _xp(input)
    data = input._data
    info = np.finfo(data.dtype) if data.dtype.kind == "f" else None
    pos = posinf if posinf is not None else (info.max if info else 0)
    neg = neginf if neginf is not None else (info.min if info else 0)
    out = where(Tensor._make(xp.isnan(data)), nan, input)
    out = where(Tensor._make(xp.isposinf(data)), pos, out)
    return where(Tensor._make(xp.isneginf(data)), neg, out)


def count_nonzero(input, dim=None):
    return Tensor._make(_xp(input).asarray(_xp(input).count_nonzero(input._data, axis=dim), dtype=np.int64))


def nonzero(input, *, as_tuple=False):
    idx = _xp(input).nonzero(input._data)
    if as_tuple:
        return tuple(Tensor._make(i.astype(np.int64)) for i in idx)
    return Tensor._make(_xp(input).stack(idx, axis=-1).astype(np.int64))


def argwhere(input):
    return nonzero(input)


def _bitwise(ufunc_name):
    def op(a, b=None):
        if b is None:
            return Tensor._make(getattr(_xp(a), ufunc_name)(a._data))
        return _nograd(getattr(_xp(a if isinstance(a, Tensor) else b), ufunc_name), a, b)

    op.__name__ = ufunc_name.replace("invert", "bitwise_not")
    return op


bitwise_and = _bitwise("bitwise_and")
bitwise_or = _bitwise("bitwise_or")
bitwise_xor = _bitwise("bitwise_xor")
bitwise_not = _bitwise("invert")


def numel(input):
    return input.numel()


def is_floating_point(input):
    return input.is_floating_point()


ravel = flatten


__all__ = [
    name for name, value in list(globals().items())
    if not name.startswith("_") and callable(value) and not isinstance(value, type)
    and name not in ("floating", "promote")
    and getattr(value, "__module__", "").startswith("ddpgrad.ops")
] + ["values_indices"]
