"""Collectives on GPU (CuPy) arrays for a communicator whose MPI can not read device memory.

The communicator (never the reducer, a hook or DDP) hands such a buffer here, as ChainerMN's
non-CUDA-aware communicators do: its device-to-host copy into a reused pinned buffer runs on a
side stream while backward goes on computing, the host collective starts once the copy has
landed, and ``wait()`` copies the result back to the device. A collective the communicator
starts later first launches the staged ones still waiting for their copy, so every rank issues
its collectives in one order.
"""

from __future__ import annotations

import collections
import os

from ..backend import cupy_module, is_cuda_array

CUDA_AWARE_ENV = "DDPGRAD_CUDA_AWARE_MPI"
""""1" or "0" overrides detection of a CUDA-aware MPI library."""


def mpi_is_cuda_aware() -> bool:
    """Whether MPI can read device arrays (MPIX_Query_cuda_support, or ``$DDPGRAD_CUDA_AWARE_MPI``)."""
    forced = os.environ.get(CUDA_AWARE_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    try:
        from mpi4py import MPI  # noqa: PLC0415 - only asked by the MPI communicator

        query = getattr(MPI, "Query_cuda_support", None)
        return bool(query()) if query else False
    except Exception:  # noqa: BLE001 - no answer means not aware
        return False


def synchronize_for_direct_access(buf):
    """A device buffer that MPI reads directly must be final: wait for the compute stream."""
    if is_cuda_array(buf):
        cupy_module().cuda.get_current_stream().synchronize()


class HostStaging:
    """Pinned host buffers, a copy stream and the staged collectives of one communicator."""

    def __init__(self):
        self._free = collections.defaultdict(list)  # (shape, dtype) -> pinned arrays not in use
        self._waiting = collections.deque()  # staged works whose host collective has not started
        self._stream = None

    def start(self, buf, start_host, in_place: bool):
        """Stage ``buf`` and return a handle; ``start_host(host_array)`` starts the collective."""
        cp = cupy_module()
        if self._stream is None:
            self._stream = cp.cuda.Stream(non_blocking=True)
        key = (buf.shape, buf.dtype.str)
        host = self._free[key].pop() if self._free[key] else _pinned(buf.shape, buf.dtype)
        ready = cp.cuda.Event()
        ready.record()  # buf is final on the compute stream here
        self._stream.wait_event(ready)
        try:
            buf.get(stream=self._stream, out=host, blocking=False)
        except TypeError:  # CuPy without non-blocking get: the copy is done when this returns
            buf.get(stream=self._stream, out=host)
        copied = cp.cuda.Event()
        copied.record(self._stream)
        work = StagedWork(self, buf, host, key, copied, start_host, in_place)
        self._waiting.append(work)
        return work

    def launch(self, until=None, block=True):
        """Start the host collectives of staged works, oldest first, up to ``until`` (all if None);
        without ``block``, stop at the first whose copy has not landed."""
        while self._waiting:
            work = self._waiting[0]
            if not block and not work.copied.done:
                return
            self._waiting.popleft()
            work.copied.synchronize()
            work.work = work.start_host(work.host)
            work.work.seq = getattr(work, "seq", None)  # the communicator's number for this call
            if work is until:
                return

    def release(self, key, host):
        self._free[key].append(host)


def _pinned(shape, dtype):
    cupy_module()
    import cupyx  # noqa: PLC0415

    return cupyx.empty_pinned(shape, dtype=dtype)


class StagedWork:
    """Device buffer -> pinned host -> host collective -> device, driven by ``test``/``wait``."""

    def __init__(self, staging, buf, host, key, copied, start_host, in_place):
        self.staging, self.buf, self.host, self.key = staging, buf, host, key
        self.copied, self.start_host, self.in_place = copied, start_host, in_place
        self.work = None
        self._result = None

    def test(self) -> bool:
        if self.work is None:
            self.staging.launch(block=False)
            if self.work is None:
                return False
        return self.work.test()

    def wait(self, timeout=None):
        if self._result is None:
            if self.work is None:
                self.staging.launch(until=self)
            host_result = self.work.wait(timeout)
            if self.in_place:
                self.buf.set(self.host)
                self._result = self.buf
            else:
                self._result = cupy_module().asarray(host_result)
            self.staging.release(self.key, self.host)
            self.host = None
        return self._result
