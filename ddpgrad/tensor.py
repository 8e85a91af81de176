"""``Tensor``: an array (NumPy or CuPy) plus what autograd needs to differentiate through it."""

from __future__ import annotations

import weakref

import numpy as np

from . import backend
from .autograd import grad_mode


class Tensor:
    """A multi-dimensional array that can record the operations applied to it.

    ``_data`` is the raw array. ``grad_fn`` is the node that produced it (None for leaves);
    ``grad`` holds the accumulated gradient of a leaf after ``backward``.
    """

    __slots__ = (
        "_data", "requires_grad", "grad", "grad_fn", "_vc", "_acc",
        "_hooks", "_post_hooks", "_retains_grad", "_view", "__weakref__",
    )
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator

    def __init__(self, data, dtype=None, requires_grad=False, device=None):
        from .ops.creation import as_array

        self._init(as_array(data, dtype=dtype, device=device))
        if requires_grad:
            self.requires_grad_(True)

    def _init(self, array):
        self._data = array
        self.requires_grad = False
        self.grad = None
        self.grad_fn = None
        self._vc = [0]
        self._acc = None
        self._hooks = None
        self._post_hooks = None
        self._retains_grad = False
        self._view = None  # (base, replay on tensors, same region of an array, base.grad_fn seen)

    @classmethod
    def _make(cls, array):
        """Wrap an array without copying or checking it (the internal fast path)."""
        t = object.__new__(cls)
        t._init(array)
        return t

    # ------------------------------------------------------------------ properties
    @property
    def data(self):
        """The same values as a tensor outside the graph (shares memory, like PyTorch)."""
        t = Tensor._make(self._data)
        t._vc = self._vc
        return t

    @data.setter
    def data(self, value):
        self._data = value._data if isinstance(value, Tensor) else value

    @property
    def shape(self):
        return Size(self._data.shape)

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def device(self):
        return backend.device_of(self._data)

    @property
    def is_cuda(self):
        return backend.is_cuda_array(self._data)

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    def size(self, dim=None):
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[dim]

    def numel(self):
        return int(self._data.size)

    nelement = numel

    def element_size(self):
        return self._data.itemsize

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def T(self):  # noqa: N802 - PyTorch's name
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self):  # noqa: N802
        return self.transpose(-2, -1)

    @property
    def _version(self):
        return self._vc[0]

    def is_floating_point(self):
        return self._data.dtype.kind == "f"

    # ------------------------------------------------------------------ autograd
    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Compute the gradient of this tensor with respect to the graph leaves."""
        from .autograd import backward

        backward([self], None if gradient is None else [gradient], retain_graph, create_graph, inputs)

    def requires_grad_(self, requires_grad=True):
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables; use .detach() to get "
                "a tensor outside the graph"
            )
        if requires_grad and self._data.dtype.kind not in "fc":
            raise RuntimeError(
                f"only tensors of floating point dtype can require gradients, got {self.dtype}"
            )
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self):
        """The same values, outside the graph (shares memory and version counter)."""
        t = Tensor._make(self._data)
        t._vc = self._vc
        return t

    def detach_(self):
        self.grad_fn = None
        self.requires_grad = False
        return self

    def retain_grad(self):
        """Keep ``.grad`` of a non-leaf tensor after backward."""
        if self.grad_fn is None or self._retains_grad:
            return
        self._retains_grad = True
        ref = weakref.ref(self)

        def keep(grad):
            t = ref()
            if t is not None:
                t.grad = Tensor._make(grad._data.copy()) if t.grad is None else t.grad + grad

        keep.keeps_grad = True
        self.register_hook(keep)

    @property
    def retains_grad(self):
        return self._retains_grad

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned tensor replaces it."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            node = self.grad_fn
            if node.pre_hooks is None:
                node.pre_hooks = []
            hooks = node.pre_hooks
        else:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        if hooks and getattr(hooks[-1], "keeps_grad", False):
            hooks.insert(len(hooks) - 1, hook)  # retain_grad's hook runs last, as in PyTorch
        else:
            hooks.append(hook)
        return _RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` once per backward, after this leaf's ``.grad`` is final."""
        if self.grad_fn is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if self._post_hooks is None:
            self._post_hooks = []
        self._post_hooks.append(hook)
        return _RemovableHandle(self._post_hooks, hook)

    def _accumulator(self):
        if self._acc is None:
            from .autograd.function import AccumulateGrad

            self._acc = AccumulateGrad(self)
        return self._acc

    # ------------------------------------------------------------------ conversion
    def item(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self._data.size} elements cannot be converted to a Python scalar"
            )
        return self._data.item()

    def tolist(self):
        return self._data.tolist()

    def numpy(self):
        """The array itself on the CPU (no copy; writes show in the tensor, as in PyTorch)."""
        if self.requires_grad and grad_mode.state.enabled:
            raise RuntimeError(
                "Can't call numpy() on a Tensor that requires grad. Use tensor.detach().numpy()"
            )
        if backend.is_cuda_array(self._data):
            raise TypeError(
                "can't convert a cuda tensor to numpy: use tensor.cpu() to copy it to the host first"
            )
        return self._own_array()

    def __array__(self, dtype=None, copy=None):
        # np.asarray(t) shares memory, np.array(t) (copy=True) must not
        data = np.asarray(backend.to_device(self._data, backend.CPU))  # 0-d results: NumPy scalars
        if dtype is not None:
            return data.astype(dtype, copy=bool(copy))
        return data.copy() if copy else data

    def to(self, *args, **kwargs):
        """Cast to a dtype and/or move to a device: ``to(dtype)``, ``to(device)``, ``to(other)``."""
        dtype, dev = parse_to_args(args, kwargs)
        out = self
        if dev is not None and dev != self.device:
            from .ops.shape import ToDevice

            out = ToDevice.apply(out, dev)
        if dtype is not None and dtype != out.dtype:
            from .ops.shape import Cast

            out = Cast.apply(out, dtype)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to(backend.device("cuda", device) if device is None or isinstance(device, int) else device)

    def float(self):
        return self.to(backend.float32)

    def double(self):
        return self.to(backend.float64)

    def half(self):
        return self.to(backend.float16)

    def long(self):
        return self.to(backend.int64)

    def int(self):
        return self.to(backend.int32)

    def bool(self):
        return self.to(backend.bool_)

    def type(self, dtype=None):
        if dtype is None:
            return f"ddpgrad.{self.dtype.name.capitalize()}Tensor"
        return self.to(dtype)

    def type_as(self, other):
        return self.to(other.dtype)

    def clone(self):
        from .ops.shape import Clone

        return Clone.apply(self)

    def contiguous(self, memory_format=None):
        return self

    def is_contiguous(self, memory_format=None):
        return bool(getattr(self._data, "flags", None) is None or self._data.flags.c_contiguous)

    def stride(self, dim=None):
        """Strides in elements, as PyTorch (NumPy counts bytes)."""
        steps = tuple(s // self._data.itemsize for s in getattr(self._data, "strides", ()))
        return steps if dim is None else steps[dim]

    def get_device(self):
        return -1 if self.device.type == "cpu" else self.device.index

    def pin_memory(self):
        return self

    def share_memory_(self):
        return self

    def _new(self, factory, *args, dtype=None, device=None, requires_grad=False, **kwargs):
        return factory(*args, dtype=dtype or self.dtype, device=device or self.device,
                       requires_grad=requires_grad, **kwargs)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(_ops.zeros, *size, dtype=dtype, device=device, requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(_ops.ones, *size, dtype=dtype, device=device, requires_grad=requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new(_ops.empty, *size, dtype=dtype, device=device, requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return self._new(_ops.full, size, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        return self._new(_ops.tensor, data, dtype=dtype, device=device, requires_grad=requires_grad)

    # ------------------------------------------------------------------ in-place (rules in ops/inplace.py)
    def _own_array(self):
        """Make ``_data`` a writable array: NumPy returns 0-d results as immutable scalars."""
        if isinstance(self._data, np.generic):
            self._data = np.array(self._data)
        return self._data

    def _bump(self):
        self._vc[0] += 1
        return self

    def _refresh_view(self):
        """Give a view the current history of its base (after the base, or another view, was rebased)."""
        base, replay, region, seen = self._view
        if base.grad_fn is not seen:
            self._view = (base, replay, region, base.grad_fn)
            if base.requires_grad:
                with grad_mode.enable_grad():
                    self.grad_fn = replay(base).grad_fn
                self.requires_grad = True

    def add_(self, other, alpha=1):
        if alpha != 1:
            other = other * alpha
        return _inplace.arith_inplace(self, "add_", _ops.add, _xp(self).add, other)

    def sub_(self, other, alpha=1):
        if alpha != 1:
            other = other * alpha
        return _inplace.arith_inplace(self, "sub_", _ops.sub, _xp(self).subtract, other)

    def mul_(self, other):
        return _inplace.arith_inplace(self, "mul_", _ops.mul, _xp(self).multiply, other)

    def div_(self, other, rounding_mode=None):
        if rounding_mode is not None:
            return _inplace.apply_inplace(self, "div_", _ops.div, other, rounding_mode=rounding_mode)
        return _inplace.arith_inplace(self, "div_", _ops.div, _xp(self).true_divide, other)

    def zero_(self):
        return self.fill_(0)

    def fill_(self, value):
        if not grad_mode.state.enabled or not (self.requires_grad or isinstance(value, Tensor) and value.requires_grad):
            self._own_array()[...] = value.item() if isinstance(value, Tensor) else value
            return self._bump()
        return _inplace.apply_inplace(self, "fill_", _inplace.Overwrite.apply, value)

    def copy_(self, src, non_blocking=False):
        if isinstance(src, Tensor) and src.device != self.device:
            src = src.to(self.device)
        if not grad_mode.state.enabled or not (self.requires_grad or isinstance(src, Tensor) and src.requires_grad):
            data = src._data if isinstance(src, Tensor) else src
            _xp(self).copyto(self._own_array(), data, casting="unsafe")
            return self._bump()
        return _inplace.apply_inplace(self, "copy_", _inplace.Overwrite.apply, src)

    def uniform_(self, a=0.0, b=1.0):
        from . import random

        return self.copy_(random.uniform_array(a, b, self.shape, self.dtype, self.device))

    def normal_(self, mean=0.0, std=1.0):
        from . import random

        return self.copy_(random.normal_array(mean, std, self.shape, self.dtype, self.device))

    def __setitem__(self, index, value):
        index = _index_arrays(index)
        if grad_mode.state.enabled and (self.requires_grad or isinstance(value, Tensor) and value.requires_grad):
            _inplace.apply_inplace(self, "__setitem__", _inplace.IndexPut.apply, value, index=index)
            return
        if isinstance(value, Tensor):
            value = value._data
        self._own_array()[index] = value
        self._bump()

    def __iadd__(self, other): return self.add_(other)
    def __isub__(self, other): return self.sub_(other)
    def __imul__(self, other): return self.mul_(other)
    def __itruediv__(self, other): return self.div_(other)
    def __ifloordiv__(self, other): return self.floor_divide_(other)
    def __imod__(self, other): return self.remainder_(other)
    def __ipow__(self, other): return self.pow_(other)
    def __iand__(self, other): return self.logical_and_(other) if self.dtype.kind == "b" else self.bitwise_and_(other)
    def __ior__(self, other): return self.logical_or_(other) if self.dtype.kind == "b" else self.bitwise_or_(other)
    def __ixor__(self, other): return self.logical_xor_(other) if self.dtype.kind == "b" else self.bitwise_xor_(other)

    # ------------------------------------------------------------------ python protocol
    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"Boolean value of Tensor with {self._data.size} values is ambiguous"
            )
        return bool(self._data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    __hash__ = object.__hash__

    def __format__(self, spec):
        if self._data.ndim == 0:
            return format(self.item(), spec)  # f"{loss:.4f}", as PyTorch
        return object.__format__(self, spec)

    def __repr__(self):
        body = np.array2string(
            np.asarray(backend.to_device(self._data, backend.CPU)),
            separator=", ", prefix="tensor(", precision=4,
        )
        extras = []
        if self.device != backend.CPU:
            extras.append(f"device='{self.device}'")
        if self.dtype not in (backend.get_default_dtype(), backend.int64, backend.bool_):
            extras.append(f"dtype=ddpgrad.{self.dtype.name}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # ------------------------------------------------------------------ ops (defined in ops/)
    def __add__(self, other): return _ops.add(self, other)
    def __radd__(self, other): return _ops.add(other, self)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.mul(self, other)
    def __rmul__(self, other): return _ops.mul(other, self)
    def __truediv__(self, other): return _ops.div(self, other)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __pow__(self, other): return _ops.pow(self, other)
    def __rpow__(self, other): return _ops.pow(other, self)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __neg__(self): return _ops.neg(self)
    def __pos__(self): return self
    def __abs__(self): return _ops.abs(self)
    def __floordiv__(self, other): return _ops.floor_divide(self, other)
    def __rfloordiv__(self, other): return _ops.floor_divide(other, self)
    def __mod__(self, other): return _ops.remainder(self, other)
    def __rmod__(self, other): return _ops.remainder(other, self)
    def __rand__(self, other): return _ops.logical_and(other, self) if self.dtype.kind == "b" else _ops.bitwise_and(other, self)
    def __ror__(self, other): return _ops.logical_or(other, self) if self.dtype.kind == "b" else _ops.bitwise_or(other, self)
    def __rxor__(self, other): return _ops.logical_xor(other, self) if self.dtype.kind == "b" else _ops.bitwise_xor(other, self)
    def __eq__(self, other): return _ops.eq(self, other)  # noqa: D105
    def __ne__(self, other): return _ops.ne(self, other)
    def __lt__(self, other): return _ops.lt(self, other)
    def __le__(self, other): return _ops.le(self, other)
    def __gt__(self, other): return _ops.gt(self, other)
    def __ge__(self, other): return _ops.ge(self, other)
    def __and__(self, other): return _ops.logical_and(self, other)
    def __or__(self, other): return _ops.logical_or(self, other)
    def __xor__(self, other): return _ops.logical_xor(self, other)
    def __invert__(self): return _ops.logical_not(self)

    def __getitem__(self, index):
        return _ops.index(self, index)


class Size(tuple):
    """A shape, as ``torch.Size``: a tuple with ``numel()``."""

    def numel(self):
        n = 1
        for d in self:
            n *= d
        return n

    def __repr__(self):
        return f"ddpgrad.Size({list(self)})"


class _RemovableHandle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def parse_to_args(args, kwargs):
    """``(dtype or None, device or None)`` from the arguments of ``Tensor.to`` / ``Module.to``."""
    dtype = kwargs.pop("dtype", None)
    device = kwargs.pop("device", None)
    kwargs.pop("non_blocking", None)
    kwargs.pop("copy", None)
    if kwargs:
        raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
    for arg in args:
        if isinstance(arg, Tensor):
            dtype, device = arg.dtype, arg.device
        elif isinstance(arg, (str, backend.device)) and not _looks_like_dtype(arg):
            device = arg
        else:
            dtype = arg
    return backend.as_dtype(dtype), (None if device is None else backend.as_device(device))


def _looks_like_dtype(spec):
    if isinstance(spec, backend.device):
        return False
    try:
        backend.device(spec)
        return False
    except (ValueError, TypeError):
        return True


def _index_arrays(index):
    """Replace Tensors inside an index expression by their arrays."""
    if isinstance(index, Tensor):
        return index._data
    if isinstance(index, tuple):
        return tuple(i._data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list) and any(isinstance(i, Tensor) for i in index):
        return [i._data if isinstance(i, Tensor) else i for i in index]
    return index


def is_tensor(obj):
    return isinstance(obj, Tensor)


def _xp(t):
    return backend.array_module(t._data)


from . import ops as _ops  # noqa: E402  (ops build on Tensor)
from .ops import inplace as _inplace  # noqa: E402
