"""Every method of ``Tensor`` that computes, bound onto the class from one table.

``tensor.py`` holds the data and Python's protocols; this module, the top of the autograd layer,
gives ``Tensor`` its operators (``x + y``, ``x[i] = v``, ``x += y``), its ops as methods
(``x.sum()``: the function ``ddpgrad.sum`` itself), their in-place forms (``x.exp_()``, rules in
``inplace.py``), conversions (``x.to()``, ``x.float()``) and ``x.backward()``. A name listed in
``FUNCTIONS`` is the function of the same name in ``ddpgrad.ops``; ``INPLACE`` names get an
``op_`` method; everything else is a small function below, bound by ``BOUND``.
"""

from __future__ import annotations

from .. import backend, random
from ..autograd import grad_mode
from ..autograd.differentiate import backward as _backward
from ..autograd.function import leaf_node
from ..tensor import Tensor, _index_arrays, parse_to_args
from . import extra, functional, inplace
from . import shape as shape_ops

# x.name(...) is ddpgrad.name(x, ...)
FUNCTIONS = [
    "add", "sub", "mul", "div", "pow", "neg", "matmul", "mm", "bmm", "maximum", "minimum", "exp",
    "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "clamp", "clip", "sum", "mean", "var",
    "std", "max", "min", "amax", "amin", "logsumexp", "softmax", "log_softmax", "reshape",
    "view", "flatten", "permute", "transpose", "t", "squeeze", "unsqueeze", "expand",
    "expand_as", "eq", "ne", "lt", "le", "gt", "ge", "argmax", "argmin", "masked_fill",
    "isnan", "isfinite", "logical_not", "logical_and", "logical_or", "logical_xor", "multiply",
    "divide", "subtract", "true_divide", "negative", "swapaxes", "floor_divide", "remainder",
    "fmod", "any", "all", "sin", "cos", "tan", "asin", "acos", "atan", "arcsin", "arccos",
    "arctan", "sinh", "cosh", "asinh", "acosh", "atanh", "exp2", "expm1", "log1p", "log2",
    "log10", "rsqrt", "reciprocal", "erf", "erfc", "frac", "square", "floor", "ceil", "trunc",
    "fix", "round", "sign", "sgn", "atan2", "arctan2", "clamp_min", "clamp_max", "lerp",
    "addcmul", "addcdiv", "hypot", "logaddexp", "xlogy", "outer", "ger", "dot", "inner", "mv",
    "addmm", "prod", "cumsum", "cumprod", "norm", "dist", "gather", "scatter", "scatter_add",
    "index_select", "index_add", "index_fill", "masked_select", "take", "take_along_dim",
    "sort", "argsort", "msort", "topk", "kthvalue", "median", "select", "narrow", "split",
    "tensor_split", "chunk", "unbind", "flip", "fliplr", "flipud", "roll", "tile",
    "repeat_interleave", "movedim", "moveaxis", "tril", "triu", "diagonal", "diag", "trace",
    "softplus", "silu", "mish", "hardtanh", "leaky_relu", "elu", "relu6", "logsigmoid", "gelu",
    "isclose", "isinf", "nan_to_num", "count_nonzero", "bitwise_and", "bitwise_or",
    "bitwise_xor", "bitwise_not", "nonzero", "argwhere", "ravel", "std_mean", "var_mean",
    "heaviside", "logit", "inverse", "det", "logdet", "cross", "kron", "rot90", "diag_embed",
    "diagflat", "addmv", "baddbmm", "addbmm", "bernoulli", "multinomial", "unique", "bincount",
    "histc", "isin", "tensordot", "equal", "allclose",
]
# x.name_(...) writes ddpgrad.name(x, ...) into x
INPLACE = [
    "pow", "clamp", "clip", "exp", "log", "sqrt", "abs", "neg", "negative", "tanh", "sigmoid",
    "relu", "floor_divide", "remainder", "fmod", "masked_fill", "logical_and", "logical_or",
    "logical_xor", "logical_not", "sin", "cos", "tan", "asin", "acos", "atan", "arcsin", "arccos",
    "arctan", "sinh", "cosh", "asinh", "acosh", "atanh", "exp2", "expm1", "log1p", "log2",
    "log10", "rsqrt", "reciprocal", "erf", "erfc", "frac", "square", "floor", "ceil", "trunc",
    "fix", "round", "sign", "sgn", "atan2", "clamp_min", "clamp_max", "lerp", "addcmul",
    "addcdiv", "hypot", "xlogy", "scatter", "scatter_add", "index_add", "index_fill", "tril",
    "triu", "cumsum", "cumprod", "nan_to_num", "bitwise_and", "bitwise_or", "bitwise_xor",
    "bitwise_not", "multiply", "subtract", "divide", "true_divide", "addmm", "hardtanh",
    "leaky_relu", "elu", "silu", "softplus", "mish", "logit", "heaviside",
]
# x.name_(...) gives x the shape (and history) of ddpgrad.name(x, ...)
RESHAPING = {
    "unsqueeze_": "unsqueeze", "squeeze_": "squeeze", "t_": "t", "transpose_": "transpose",
    "swapaxes_": "transpose", "resize_": "reshape", "flatten_": "flatten",
}


def _raw(fn):
    """An op without its ``out=`` wrapper (operators never take one; one call less per ``x + y``)."""
    return getattr(fn, "__wrapped__", fn)


def _op(name):
    return getattr(functional, name, None) or getattr(extra, name)


# ---------------------------------------------------------------------------- autograd
def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
    """Compute the gradient of this tensor with respect to the graph leaves."""
    _backward([self], None if gradient is None else [gradient], retain_graph, create_graph, inputs)


def _accumulator(self):
    return leaf_node(self)  # kept for callers of the former method


# ---------------------------------------------------------------------------- conversion
def numpy(self, *, force=False):
    """The array itself on the CPU (no copy; writes show in the tensor, as in PyTorch)."""
    if self.requires_grad and grad_mode.state.enabled and not force:
        raise RuntimeError("Can't call numpy() on a Tensor that requires grad. Use tensor.detach().numpy()")
    if backend.is_cuda_array(self._data):
        if force:
            return backend.to_device(self._data, backend.CPU)
        raise TypeError("can't convert a cuda tensor to numpy: use tensor.cpu() to copy it to the host first")
    return self._own_array()


def to(self, *args, **kwargs):
    """Cast to a dtype and/or move to a device: ``to(dtype)``, ``to(device)``, ``to(other)``."""
    dtype, dev = parse_to_args(args, kwargs)
    out = self
    if dev is not None and dev != self.device:
        out = shape_ops.ToDevice.apply(out, dev)
    if dtype is not None and dtype != out.dtype:
        out = shape_ops.Cast.apply(out, dtype)
    return out


def cpu(self):
    return to(self, "cpu")


def cuda(self, device=None):
    return to(self, backend.device("cuda", device) if device is None or isinstance(device, int) else device)


def _cast(dtype):
    def cast(self, memory_format=None):
        return to(self, dtype)

    cast.__name__ = cast.__qualname__ = dtype.name
    cast.__doc__ = f"This tensor as {dtype.name} (itself when it already is)."
    return cast


def type(self, dtype=None):  # noqa: A001 - PyTorch's name
    if dtype is None:
        return f"ddpgrad.{self.dtype.name.capitalize()}Tensor"
    return to(self, dtype)


def type_as(self, other):
    return to(self, other.dtype)


def clone(self, memory_format=None):
    return shape_ops.Clone.apply(self)


def _new(factory):
    def new(self, *args, dtype=None, device=None, requires_grad=False, **kwargs):
        return factory(*args, dtype=dtype or self.dtype, device=device or self.device,
                       requires_grad=requires_grad, **kwargs)

    new.__doc__ = f"``ddpgrad.{factory.__name__}`` with this tensor's dtype and device by default."
    return new


def view_as(self, other):
    return functional.reshape(self, other.shape)


def where(self, condition, other):
    return functional.where(condition, self, other)


def repeat(self, *sizes):
    """Tile this tensor ``sizes`` times per dimension (``sizes`` may add leading dimensions)."""
    return shape_ops.Repeat.apply(self, functional._shape_args(sizes))


def T(self):  # noqa: N802 - PyTorch's name
    return functional.permute(self, *reversed(range(self.ndim)))


def mT(self):  # noqa: N802
    return functional.transpose(self, -2, -1)


# ---------------------------------------------------------------------------- indexing
def __getitem__(self, index):
    return functional.index(self, index)


def __setitem__(self, index, value):
    index = _index_arrays(index)
    if grad_mode.state.enabled and (self.requires_grad or isinstance(value, Tensor) and value.requires_grad):
        inplace.apply_inplace(self, "__setitem__", inplace.IndexPut.apply, value, index=index)
        return
    if isinstance(value, Tensor):
        value = value._data
    self._own_array()[index] = value
    self._bump()


# ---------------------------------------------------------------------------- in place
def _xp(t):
    return backend.array_module(t._data)


def add_(self, other, alpha=1):
    if alpha != 1:
        other = other * alpha
    return inplace.arith_inplace(self, "add_", functional.add, _xp(self).add, other)


def sub_(self, other, alpha=1):
    if alpha != 1:
        other = other * alpha
    return inplace.arith_inplace(self, "sub_", functional.sub, _xp(self).subtract, other)


def mul_(self, other):
    return inplace.arith_inplace(self, "mul_", functional.mul, _xp(self).multiply, other)


def div_(self, other, rounding_mode=None):
    if rounding_mode is not None:
        return inplace.apply_inplace(self, "div_", functional.div, other, rounding_mode=rounding_mode)
    return inplace.arith_inplace(self, "div_", functional.div, _xp(self).true_divide, other)


def _outside_graph(self, other):
    return not grad_mode.state.enabled or not (
        self.requires_grad or isinstance(other, Tensor) and other.requires_grad)


def fill_(self, value):
    if _outside_graph(self, value):
        self._own_array()[...] = value.item() if isinstance(value, Tensor) else value
        return self._bump()
    return inplace.apply_inplace(self, "fill_", inplace.Overwrite.apply, value)


def zero_(self):
    return fill_(self, 0)


def copy_(self, src, non_blocking=False):
    if isinstance(src, Tensor) and src.device != self.device:
        src = to(src, self.device)
    if _outside_graph(self, src):
        _xp(self).copyto(self._own_array(), src._data if isinstance(src, Tensor) else src, casting="unsafe")
        return self._bump()
    return inplace.apply_inplace(self, "copy_", inplace.Overwrite.apply, src)


def uniform_(self, a=0.0, b=1.0, *, generator=None):
    return copy_(self, random.uniform_array(a, b, self.shape, self.dtype, self.device, generator))


def normal_(self, mean=0.0, std=1.0, *, generator=None):
    return copy_(self, random.normal_array(mean, std, self.shape, self.dtype, self.device, generator))


def bernoulli_(self, p=0.5, *, generator=None):
    return copy_(self, random.bernoulli_mask(p, self.shape, self.dtype, self.device, generator))


def _inplace_method(name, fn):
    def method(self, *args, **kwargs):
        return inplace.apply_inplace(self, name, fn, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"In-place ``{name[:-1]}``: writes the result into this tensor."
    return method


def _reshaping_method(name, fn):
    def method(self, *args, **kwargs):
        if grad_mode.state.enabled and self.requires_grad:
            if self.grad_fn is None:
                raise RuntimeError(f"{name}: {inplace.LEAF_MESSAGE}")
            out = fn(self, *args, **kwargs)
            self._data, self.grad_fn = out._data, out.grad_fn
        else:
            with grad_mode.no_grad():
                self._data = fn(self, *args, **kwargs)._data
        return self

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``{name[:-1]}`` in place: this tensor takes the new shape (values and history stay)."
    return method


def _logical_or_bitwise(logical, bitwise, swap=False, in_place=False):
    def method(self, other):
        op = logical if self.dtype.kind == "b" else bitwise
        if in_place:
            return getattr(self, op + "_")(other)
        fn = _op(op)
        return fn(other, self) if swap else fn(self, other)

    return method


def _reflected(fn):
    def method(self, other):
        return fn(other, self)

    method.__name__ = method.__qualname__ = f"__r{fn.__name__}__"
    return method


def _pos(self):
    return self


BOUND = {
    "backward": backward, "_accumulator": _accumulator, "numpy": numpy, "to": to, "cpu": cpu,
    "cuda": cuda, "float": _cast(backend.float32), "double": _cast(backend.float64),
    "half": _cast(backend.float16), "long": _cast(backend.int64), "int": _cast(backend.int32),
    "bool": _cast(backend.bool_), "type": type, "type_as": type_as, "clone": clone,
    "new_zeros": _new(functional.zeros), "new_ones": _new(functional.ones),
    "new_empty": _new(functional.empty), "new_full": _new(functional.full),
    "new_tensor": _new(functional.tensor), "view_as": view_as, "reshape_as": view_as, "where": where,
    "repeat": repeat, "T": property(T), "mT": property(mT),
    "__getitem__": __getitem__, "__setitem__": __setitem__,
    "add_": add_, "sub_": sub_, "mul_": mul_, "div_": div_, "fill_": fill_, "zero_": zero_,
    "copy_": copy_, "uniform_": uniform_, "normal_": normal_, "bernoulli_": bernoulli_,
    # operators
    "__add__": _raw(functional.add), "__radd__": _reflected(_raw(functional.add)),
    "__sub__": _raw(functional.sub), "__rsub__": _reflected(_raw(functional.sub)),
    "__mul__": _raw(functional.mul), "__rmul__": _reflected(_raw(functional.mul)),
    "__truediv__": _raw(functional.div), "__rtruediv__": _reflected(_raw(functional.div)),
    "__pow__": _raw(functional.pow), "__rpow__": _reflected(_raw(functional.pow)),
    "__matmul__": _raw(functional.matmul), "__rmatmul__": _reflected(_raw(functional.matmul)),
    "__floordiv__": _raw(functional.floor_divide), "__rfloordiv__": _reflected(_raw(functional.floor_divide)),
    "__mod__": _raw(functional.remainder), "__rmod__": _reflected(_raw(functional.remainder)),
    "__neg__": _raw(functional.neg), "__pos__": _pos, "__abs__": _raw(functional.abs),
    "__eq__": _raw(functional.eq), "__ne__": _raw(functional.ne), "__lt__": _raw(functional.lt), "__le__": _raw(functional.le),
    "__gt__": _raw(functional.gt), "__ge__": _raw(functional.ge),
    "__and__": _raw(functional.logical_and), "__or__": _raw(functional.logical_or), "__xor__": _raw(functional.logical_xor),
    "__rand__": _logical_or_bitwise("logical_and", "bitwise_and", swap=True),
    "__ror__": _logical_or_bitwise("logical_or", "bitwise_or", swap=True),
    "__rxor__": _logical_or_bitwise("logical_xor", "bitwise_xor", swap=True),
    "__invert__": _raw(functional.logical_not),
    # augmented assignment acts in place, as in PyTorch (``@=`` rebinds: PyTorch has no __imatmul__)
    "__iadd__": add_, "__isub__": sub_, "__imul__": mul_, "__itruediv__": div_,
    "__ifloordiv__": lambda self, other: self.floor_divide_(other),
    "__imod__": lambda self, other: self.remainder_(other),
    "__ipow__": lambda self, other: self.pow_(other),
    "__iand__": _logical_or_bitwise("logical_and", "bitwise_and", in_place=True),
    "__ior__": _logical_or_bitwise("logical_or", "bitwise_or", in_place=True),
    "__ixor__": _logical_or_bitwise("logical_xor", "bitwise_xor", in_place=True),
}


def bind():
    """Give ``Tensor`` every method above (run once, when ``ddpgrad.ops`` is imported)."""
    for name in FUNCTIONS:
        setattr(Tensor, name, _op(name))
    for name in INPLACE:
        setattr(Tensor, name + "_", _inplace_method(name + "_", _op(name)))
    for name, op in RESHAPING.items():
        setattr(Tensor, name, _reshaping_method(name, _op(op)))
    for name, method in BOUND.items():
        setattr(Tensor, name, method)
    Tensor.__hash__ = object.__hash__  # defining __eq__ would otherwise drop it
