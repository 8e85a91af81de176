"""Factory functions: tensors from data, constants, ranges and random draws."""

from __future__ import annotations

import numpy as np

from .. import backend, random
from ..tensor import Tensor, as_array  # noqa: F401  (as_array: re-exported)


def _leaf(array, requires_grad):
    t = Tensor._make(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _size(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(int(s) for s in size)


def _module(device):
    return backend.module_for(backend.as_device(device))


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new leaf tensor holding a copy of ``data``."""
    return _leaf(as_array(data, dtype, device), requires_grad)


def as_tensor(data, dtype=None, device=None):
    """Like ``tensor`` but shares memory with a NumPy array when dtype and device already fit."""
    if isinstance(data, Tensor) and (dtype is None or backend.as_dtype(dtype) == data.dtype):
        return data if device is None else data.to(device)
    if isinstance(data, np.ndarray) and (dtype is None or backend.as_dtype(dtype) == data.dtype) and device in (None, "cpu"):
        return Tensor._make(data)
    return tensor(data, dtype, device)


def from_numpy(array):
    """A tensor sharing memory with ``array`` (writes show in both)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    return Tensor._make(array)


def _filled(fill, size, dtype, device, requires_grad):
    dtype = backend.as_dtype(dtype) or backend.get_default_dtype()
    xp = _module(device)
    dev = backend.as_device(device)
    if dev.type == "cuda":
        with xp.cuda.Device(dev.index):
            return _leaf(xp.full(_size(size), fill, dtype=dtype), requires_grad)
    return _leaf(xp.full(_size(size), fill, dtype=dtype), requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _filled(0, size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _filled(1, size, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    return _filled(0, size, dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = backend.as_dtype(type(fill_value)) if isinstance(fill_value, (bool, int, float)) else None
    return _filled(fill_value, (size,) if isinstance(size, int) else tuple(size), dtype, device, requires_grad)


def _like(fn, t, dtype, device, requires_grad, *extra):
    return fn(t.shape, *extra, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return _like(zeros, t, dtype, device, requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return _like(ones, t, dtype, device, requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    return _like(empty, t, dtype, device, requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False, generator=None):
    """Standard normal draws from the global (or given) generator."""
    return _leaf(random.normal_array(0.0, 1.0, _size(size), dtype, device, generator), requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False, generator=None):
    """Uniform draws on [0, 1)."""
    return _leaf(random.uniform_array(0.0, 1.0, _size(size), dtype, device, generator), requires_grad)


def randint(*args, size=None, dtype=None, device=None, generator=None):
    """Integers in [low, high): ``randint(high, size)`` or ``randint(low, high, size)``."""
    if size is None:
        *args, size = args
    low, high = (0, args[0]) if len(args) == 1 else args
    return _leaf(random.randint_array(low, high, tuple(size), dtype, device, generator), False)


def randperm(n, dtype=None, device=None, generator=None):
    t = _leaf(random.permutation_array(n, device, generator), False)
    return t if dtype is None else t.to(dtype)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return randn(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    return rand(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(isinstance(v, int) for v in (start, end, step))
        dtype = backend.int64 if is_int else backend.get_default_dtype()
    return _leaf(backend.to_device(np.arange(start, end, step, dtype=backend.as_dtype(dtype)),
                                   backend.as_device(device)), requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    dtype = backend.as_dtype(dtype) or backend.get_default_dtype()
    return _leaf(backend.to_device(np.linspace(start, end, steps).astype(dtype),
                                   backend.as_device(device)), requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    dtype = backend.as_dtype(dtype) or backend.get_default_dtype()
    return _leaf(backend.to_device(np.eye(n, m, dtype=dtype), backend.as_device(device)), requires_grad)
