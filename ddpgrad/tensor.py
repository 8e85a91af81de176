"""``Tensor``: an array (NumPy or CuPy) plus what autograd needs to differentiate through it.

This module is the bottom of the autograd layer: it imports only the backend. It holds the data,
its attributes and Python's protocols; every method that computes (``x + y``, ``x.sum()``,
``x.add_()``, ``x.to()``, ``x.backward()``) is bound onto the class from one table in
``ddpgrad/ops/methods.py``, once the ops it calls exist.
"""

from __future__ import annotations

import weakref

import numpy as np

from . import backend


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
        """``Tensor(data)``, PyTorch's legacy constructor: always the default float dtype (use
        ``ddpgrad.tensor(data)`` to keep integer or bool data)."""
        self._init(as_array(data, dtype=dtype or backend.get_default_dtype(), device=device))
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
        array = value._data if isinstance(value, Tensor) else value
        if array is not self._data:
            self._data, self._view = array, None  # new memory: no longer a view of anything

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
    def _version(self):
        return self._vc[0]

    def is_floating_point(self):
        return self._data.dtype.kind == "f"

    # ------------------------------------------------------------------ autograd
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

    # ------------------------------------------------------------------ conversion
    def item(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self._data.size} elements cannot be converted to a Python scalar"
            )
        return self._data.item()

    def tolist(self):
        return self._data.tolist()

    def __array__(self, dtype=None, copy=None):
        # np.asarray(t) shares memory, np.array(t) (copy=True) must not
        data = np.asarray(backend.to_device(self._data, backend.CPU))  # 0-d results: NumPy scalars
        if dtype is not None:
            return data.astype(dtype, copy=bool(copy))
        return data.copy() if copy else data

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

    # ------------------------------------------------------------------ in-place bookkeeping
    def _own_array(self):
        """Make ``_data`` a writable array: NumPy returns 0-d results as immutable scalars."""
        if isinstance(self._data, np.generic):
            self._data = np.array(self._data)
        return self._data

    def _bump(self):
        self._vc[0] += 1
        return self

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


def as_array(data, dtype=None, device=None):
    """An array for ``data`` with PyTorch's dtype inference.

    Python floats become the default dtype (float32), Python ints int64, bools bool; NumPy arrays
    keep their dtype. ``device`` moves the result.
    """
    dtype = backend.as_dtype(dtype)
    if isinstance(data, Tensor):
        array = data._data
    elif isinstance(data, np.ndarray) or backend.is_cuda_array(data):
        array = data
    else:
        if isinstance(data, (list, tuple)) and any(isinstance(d, Tensor) for d in _flat(data)):
            data = _unwrap_nested(data)
        array = np.asarray(data)
        if array.dtype == np.float64 and dtype is None and not isinstance(data, np.generic):
            dtype = backend.get_default_dtype()
        elif array.dtype.kind == "i" and dtype is None and not isinstance(data, np.generic):
            dtype = backend.int64  # Python ints (int32 on some platforms); NumPy scalars keep theirs
        elif array.dtype.kind not in "fiubc":
            raise TypeError(f"can't convert {type(data).__name__} with dtype {array.dtype} to a tensor")
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    elif isinstance(data, (Tensor, np.ndarray)) or backend.is_cuda_array(data):
        array = array.copy()
    if device is not None or backend.get_default_device() != backend.CPU:
        array = backend.to_device(array, backend.as_device(device))
    return array


def _flat(seq):
    for item in seq:
        if isinstance(item, (list, tuple)):
            yield from _flat(item)
        else:
            yield item


def _unwrap_nested(seq):
    if isinstance(seq, (list, tuple)):
        return [_unwrap_nested(s) for s in seq]
    return backend.to_device(seq._data, backend.CPU) if isinstance(seq, Tensor) else seq
