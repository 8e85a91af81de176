"""``ddpgrad.cuda``: whether a GPU can be used, without importing CuPy until one is asked for."""

from __future__ import annotations

from . import backend


def is_available() -> bool:
    """True when CuPy is installed and sees at least one CUDA device."""
    return device_count() > 0


def device_count() -> int:
    try:
        cp = backend.cupy_module()
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "no GPU"
        return 0


def manual_seed(seed):
    """Seed the generator used for CUDA tensors (the same global one: draws are made on the host)."""
    from .random import manual_seed as seed_all

    seed_all(seed)


manual_seed_all = manual_seed


def set_device(index):
    backend.cupy_module().cuda.Device(index).use()


def current_device() -> int:
    return int(backend.cupy_module().cuda.Device().id)


def synchronize():
    backend.cupy_module().cuda.Device().synchronize()
