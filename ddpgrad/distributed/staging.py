"""Allreduce of GPU (CuPy) gradient buckets.

When the MPI library is CUDA-aware, device buffers go to MPI directly. Otherwise each bucket has a
reused pinned host buffer: its device-to-host copy runs on a side stream while backward goes on
computing, the host buffer is reduced as soon as the copy has landed, and the result is copied
back. So the copy of one bucket overlaps the reduction of another and the rest of backward.
"""

from __future__ import annotations

import os

from ..backend import cupy_module, is_cuda_array

CUDA_AWARE_ENV = "DDPGRAD_CUDA_AWARE_MPI"
""""1" or "0" overrides detection of a CUDA-aware MPI library."""


def mpi_is_cuda_aware(comm) -> bool:
    """Whether ``comm`` can reduce device arrays in place (MPIX_Query_cuda_support, or the env)."""
    forced = os.environ.get(CUDA_AWARE_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    if getattr(comm, "backend", None) != "mpi":
        return False
    try:
        from mpi4py import MPI  # noqa: PLC0415

        query = getattr(MPI, "Query_cuda_support", None)
        return bool(query()) if query else False
    except Exception:  # noqa: BLE001 - no answer means not aware
        return False


def needs_staging(buffer, comm) -> bool:
    return is_cuda_array(buffer) and comm.size > 1 and not mpi_is_cuda_aware(comm)


def pinned_like(buffer):
    """A page-locked host array of ``buffer``'s size and dtype (fast, asynchronous copies)."""
    cupy_module()
    import cupyx  # noqa: PLC0415

    return cupyx.empty_pinned((buffer.size,), dtype=buffer.dtype)


class StagedAllreduce:
    """Device buffer → pinned host → MPI allreduce → device buffer, driven by ``test``/``wait``."""

    _copy_stream = None

    def __init__(self, comm, buffer, host, op, describe):
        cp = cupy_module()
        if StagedAllreduce._copy_stream is None:
            StagedAllreduce._copy_stream = cp.cuda.Stream(non_blocking=True)
        stream = StagedAllreduce._copy_stream
        ready = cp.cuda.Event()
        ready.record()  # the gradients are final on the compute stream here
        stream.wait_event(ready)
        try:
            buffer.get(stream=stream, out=host, blocking=False)
        except TypeError:  # CuPy without non-blocking get: copy, then the event is already done
            buffer.get(stream=stream, out=host)
        self._copied = cp.cuda.Event()
        self._copied.record(stream)
        self.comm, self.buffer, self.host, self.op, self.describe = comm, buffer, host, op, describe
        self.work = None
        self.result = buffer

    def _launch_if_copied(self, block):
        if self.work is None:
            if not block and not self._copied.done:
                return False
            self._copied.synchronize()
            self.work = self.comm.iallreduce(self.host, self.op, describe=self.describe)
        return True

    def start(self):
        """Launch the MPI reduction now (waiting for the copy): keeps collectives in bucket order."""
        self._launch_if_copied(block=True)

    def test(self) -> bool:
        return self._launch_if_copied(block=False) and self.work.test()

    def wait(self, timeout=None):
        self._launch_if_copied(block=True)
        self.work.wait(timeout)
        self.buffer.set(self.host)
        return self.buffer


def start_allreduce(comm, buffer, host, describe, op="sum"):
    """Start reducing ``buffer`` (NumPy, or CuPy staged through ``host`` when given)."""
    if host is not None:
        return StagedAllreduce(comm, buffer, host, op, describe)
    if is_cuda_array(buffer):
        cupy_module().cuda.get_current_stream().synchronize()  # MPI reads the memory directly
    return comm.iallreduce(buffer, op, describe=describe)
