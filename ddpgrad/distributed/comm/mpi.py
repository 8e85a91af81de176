"""The MPI backend (mpi4py, imported only here and only when used).

Arrays go to MPI as typed buffers, never as pickled objects. float16 has no standard MPI type:
broadcast and allgather move its bits as uint16; allreduce sums (or max/min/prod) a float32 copy
and rounds back once. That costs twice the bytes on the wire for float16 buffers, and buys a more
accurate sum and no Python callback inside MPI's progress engine.

The 16-bit sums "sum_fp16" and "sum_bf16" (gradient compression) do keep 16 bits on the wire:
they are user-defined MPI ops whose Python callback applies ``sum16``'s pairwise sum, the same
NumPy arithmetic as the other backends.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

import numpy as np

from .base import SPIN_S, Communicator, Work, abort_disabled
from .sum16 import PAIRWISE_SUMS

_MPI_TYPE_NAMES = {
    np.dtype(np.float32): "FLOAT",
    np.dtype(np.float64): "DOUBLE",
    np.dtype(np.int32): "INT32_T",
    np.dtype(np.int64): "INT64_T",
    np.dtype(np.uint16): "UINT16_T",
    np.dtype(np.uint8): "UINT8_T",
}
_MPI_OP_NAMES = {"sum": "SUM", "max": "MAX", "min": "MIN", "prod": "PROD"}
_abort_hooks_installed = False
_sum16_ops = {}  # op name -> MPI.Op, created once per process (mpi4py has few user-op slots)


def mpi_module():
    """``mpi4py.MPI``, with an error that says how to get it."""
    try:
        from mpi4py import MPI  # noqa: PLC0415 - lazy on purpose: ddpgrad runs without MPI
    except ImportError as exc:
        raise ImportError(
            'the "mpi" backend needs mpi4py and an MPI library: pip install "ddpgrad[mpi]"'
        ) from exc
    return MPI


ABORT_FLUSH_S = 0.25
"""Pause between writing the report and MPI_Abort: the launcher forwards each rank's stderr
through a pipe, and an abort can kill the job before the report has gone through (seen under
load: the job failed with no message)."""


def abort_job(message: str):
    """Print ``message`` to stderr, each line prefixed with ``[rank N] ``, and end the MPI job."""
    MPI = mpi_module()
    prefix = f"[rank {MPI.COMM_WORLD.Get_rank()}] "
    sys.stderr.write("".join(prefix + line + "\n" for line in message.rstrip("\n").split("\n")))
    sys.stderr.flush()
    time.sleep(ABORT_FLUSH_S)
    MPI.COMM_WORLD.Abort(1)
    os._exit(1)  # MPI_Abort can return when another rank's abort is already ending the job


def install_abort_on_exception() -> bool:
    """Make an uncaught exception on any rank (main or other thread) end the whole MPI job, with
    its traceback on stderr, instead of leaving the other ranks waiting in a collective.

    Only under MPI with more than one rank, and not when ``DDPGRAD_NO_ABORT=1``. Idempotent.
    Returns whether the hooks are installed.
    """
    global _abort_hooks_installed
    if _abort_hooks_installed or abort_disabled():
        return _abort_hooks_installed
    if mpi_module().COMM_WORLD.Get_size() < 2:
        return False

    def excepthook(exc_type, exc, tb):
        abort_job("".join(traceback.format_exception(exc_type, exc, tb)))

    def thread_excepthook(args):
        if args.exc_type is SystemExit:  # threading ignores it too
            return
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        abort_job(f"uncaught exception in thread {args.thread.name if args.thread else '?'}:\n{text}")

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    _abort_hooks_installed = True
    return True


def sum16_op(name):
    """The user-defined, commutative ``MPI.Op`` for a ``sum16`` op, on buffers typed UINT16_T."""
    op = _sum16_ops.get(name)
    if op is None:

        def combine(inbuf, inoutbuf, datatype):
            if datatype.Get_size() != 2:
                raise TypeError(f"the {name} MPI op takes 16-bit elements, got {datatype.Get_name()}")
            dtype, add = PAIRWISE_SUMS[name]  # looked up per call, so a test can watch it
            add(np.frombuffer(inoutbuf, dtype=dtype), np.frombuffer(inbuf, dtype=dtype))

        op = _sum16_ops[name] = mpi_module().Op.Create(combine, commute=True)
    return op


class _MPIWork(Work):
    spin_s = SPIN_S

    def __init__(self, comm, collective, describe, request, result=None, finish=None):
        super().__init__(comm, collective, describe, result)
        self._request = request
        self._on_finish = finish

    def _poll(self):
        return self._request.Test()

    def _finish(self):
        if self._on_finish is not None:
            self._on_finish()
        self._request = self._on_finish = None


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (default: all of ``MPI.COMM_WORLD``).

    Works on a duplicate of ``comm``, so ddpgrad's collectives never match a user's own MPI calls.
    """

    backend = "mpi"

    def __init__(self, comm=None, timeout: float | None = None):
        self._mpi = MPI = mpi_module()
        parent = MPI.COMM_WORLD if comm is None else comm
        super().__init__(parent.Get_rank(), parent.Get_size(), timeout)
        self.comm, request = parent.Idup()
        _MPIWork(self, "communicator duplication", "Comm.Idup at setup", request).wait()
        self._ops = {name: getattr(MPI, mpi_name) for name, mpi_name in _MPI_OP_NAMES.items()}
        self._types = {dtype: getattr(MPI, mpi_name) for dtype, mpi_name in _MPI_TYPE_NAMES.items()}

    @property
    def aborts_job(self):
        return self.size > 1 and not abort_disabled()

    def abort(self, message):
        abort_job(message)

    def _typed(self, buf):
        """``buf`` as an MPI buffer spec; float16 travels as its uint16 bits."""
        if buf.dtype == np.float16:
            buf = buf.view(np.uint16)
        return [buf, self._types[buf.dtype]]

    def _iallreduce(self, buf, op, describe):
        if op in PAIRWISE_SUMS:
            wire = [buf.view(np.uint16), self._types[np.dtype(np.uint16)]]
            request = self.comm.Iallreduce(self._mpi.IN_PLACE, wire, sum16_op(op))
            return _MPIWork(self, "allreduce", describe, request, result=buf)
        finish = None
        target = buf
        if buf.dtype == np.float16:
            target = buf.astype(np.float32)

            def finish():
                np.copyto(buf, target, casting="unsafe")

        request = self.comm.Iallreduce(self._mpi.IN_PLACE, self._typed(target), self._ops[op])
        return _MPIWork(self, "allreduce", describe, request, result=buf, finish=finish)

    def _ibroadcast(self, buf, root, describe):
        request = self.comm.Ibcast(self._typed(buf), root)
        return _MPIWork(self, "broadcast", describe, request, result=buf)

    def _iallgather(self, sendbuf, describe):
        recvbuf = np.empty((self.size, *sendbuf.shape), dtype=sendbuf.dtype)
        request = self.comm.Iallgather(self._typed(sendbuf), self._typed(recvbuf))
        return _MPIWork(self, "allgather", describe, request, result=recvbuf)

    def _ibarrier(self, describe):
        return _MPIWork(self, "barrier", describe, self.comm.Ibarrier())
