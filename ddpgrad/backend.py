"""Which array module a value lives in, and the dtype and device policy.

Everything above this layer computes through ``xp = array_module(x)``, so the same code serves
NumPy (CPU) and CuPy (GPU). CuPy is imported only when a CUDA device is asked for.
"""

from __future__ import annotations

import threading

import numpy as np

_cupy = None


def cupy_module():
    """Import CuPy on first use, with an error that says how to get it."""
    global _cupy
    if _cupy is None:
        try:
            import cupy  # noqa: PLC0415 - lazy on purpose: importing ddpgrad never imports CuPy
        except ImportError as exc:
            raise RuntimeError(
                "device 'cuda' needs CuPy, which is not installed: pip install 'ddpgrad[gpu]' "
                "(cupy-cuda12x) on a machine with an NVIDIA GPU"
            ) from exc
        _cupy = cupy
    return _cupy


def array_module(array):
    """NumPy or CuPy: the module that owns ``array``."""
    if isinstance(array, np.ndarray) or _cupy is None:
        return np
    return _cupy.get_array_module(array)


def is_cuda_array(array) -> bool:
    return _cupy is not None and isinstance(array, _cupy.ndarray)


# ---------------------------------------------------------------------------------------------
# dtypes: ddpgrad.float32 is numpy.float32's dtype, so arrays and tensors share one vocabulary.

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
int8 = np.dtype(np.int8)
int16 = np.dtype(np.int16)
bool_ = np.dtype(np.bool_)

_FLOAT_DTYPES = (float16, float32, float64)
_state = threading.local()
_DEFAULT_DTYPE = float32  # PyTorch's default


def get_default_dtype():
    """The dtype of floating tensors made from Python numbers (float32 unless changed)."""
    return getattr(_state, "default_dtype", _DEFAULT_DTYPE)


def set_default_dtype(dtype):
    """Set the dtype given to floating tensors made from Python data and by factories."""
    dtype = as_dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"set_default_dtype needs a floating dtype, got {dtype}")
    _state.default_dtype = dtype


def as_dtype(dtype):
    """Normalise a dtype spec (``ddpgrad.float32``, ``numpy.float32``, ``'float32'``, ``float``)."""
    if dtype is None:
        return None
    if dtype is float:
        return get_default_dtype()
    if dtype is bool:
        return bool_
    if dtype is int:
        return int64
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{dtype!r} is not a dtype ddpgrad understands") from exc


def is_floating(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


# ---------------------------------------------------------------------------------------------
# devices


class device:
    """Where a tensor lives: ``device('cpu')`` or ``device('cuda', 0)`` / ``device('cuda:0')``."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):  # noqa: A002 - PyTorch's argument name
        if isinstance(type, device):
            type, index = type.type, type.index
        elif isinstance(type, str) and ":" in type:
            type, _, idx = type.partition(":")
            index = int(idx)
        if type not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {type!r}: ddpgrad knows 'cpu' and 'cuda[:N]'")
        if type == "cuda" and index is None:
            index = 0
        self.type = type
        self.index = index

    def __eq__(self, other):
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device(type='{self.type}'" + ("" if self.index is None else f", index={self.index}") + ")"


CPU = device("cpu")


def get_default_device() -> device:
    """The device factories put new tensors on (``cpu`` unless changed)."""
    return getattr(_state, "default_device", CPU)


def set_default_device(spec):
    """Make factories (``zeros``, ``randn``, ``tensor``...) create tensors on ``spec`` by default."""
    _state.default_device = CPU if spec is None else as_device(spec)


def as_device(spec) -> device:
    if spec is None:
        return get_default_device()
    if isinstance(spec, device):
        return spec
    if isinstance(spec, int):
        return device("cuda", spec)
    return device(spec)


def device_of(array) -> device:
    if isinstance(array, np.ndarray) or not is_cuda_array(array):
        return CPU
    return device("cuda", array.device.id)


def to_device(array, dev: device):
    """Copy ``array`` to ``dev`` (no copy when it is already there)."""
    if dev.type == "cpu":
        return array.get() if is_cuda_array(array) else array
    cp = cupy_module()
    with cp.cuda.Device(dev.index):
        if is_cuda_array(array) and array.device.id == dev.index:
            return array
        return cp.asarray(array)


def module_for(dev: device):
    return np if dev.type == "cpu" else cupy_module()
