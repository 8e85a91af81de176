"""The MPI backend (mpi4py, imported only here and only when used).

Arrays go to MPI as typed buffers, never as pickled objects. float16 has no standard MPI type:
broadcast and allgather move its bits as uint16; allreduce sums (or max/min/prod) a float32 copy
and rounds back once. That costs twice the bytes on the wire for float16 buffers, and buys a more
accurate sum and no Python callback inside MPI's progress engine.

The 16-bit sums "sum_fp16" and "sum_bf16" (gradient compression) do keep 16 bits on the wire,
without a Python callback inside MPI (a user-defined op would run one per message, on the progress
path): an alltoall and an allgather of 16-bit chunks, with the sum done in NumPy between them
(``_Sum16Work``), the same arithmetic as the other backends.

Across nodes a ``ProgressThread`` keeps collectives moving while the main thread computes.
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
import traceback

import numpy as np

from ..staging import mpi_is_cuda_aware
from .base import SPIN_S, Communicator, Work, abort_disabled
from .sum16 import PAIRWISE_SUMS, sum_rows_16

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


PROGRESS_ENV = "DDPGRAD_PROGRESS_THREAD"
""""1" or "0" forces the progress thread on or off; by default it runs when the ranks span more
than one node (see ``ProgressThread``)."""

PROGRESS_INTERVAL_S = 100e-6
"""Pause between two rounds of the progress thread: at 1 Gb/s a TCP socket drains about 12 KB in
that time, far less than its buffer, so the link never idles, and the thread's wake-ups cost under
5% of a core. Measured on the simulated cluster (benchmarks/README.md)."""


class ProgressThread:
    """Tests the collectives in flight every ``PROGRESS_INTERVAL_S`` while the main thread computes.

    MPICH moves a non-blocking collective's data only inside MPI calls; a long matmul in backward
    makes none, so across a network the link would idle. NumPy releases the GIL inside BLAS, so
    this thread's tests run beside it. Sleeps while nothing is in flight.
    """

    def __init__(self, interval=PROGRESS_INTERVAL_S):
        self.interval = interval
        self._works = []
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="ddpgrad-mpi-progress", daemon=True)
        self._thread.start()

    def track(self, work):
        with self._cond:
            self._works.append(work)
            self._cond.notify()

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=1.0)

    def _run(self):
        cond = self._cond
        while True:
            with cond:
                while not self._works and not self._stopped:
                    cond.wait()
                if self._stopped:
                    return
                works = list(self._works)
            for work in works:
                work.try_test()
            with cond:
                self._works = [w for w in self._works if not w.done]
            time.sleep(self.interval)


class _MPIWork(Work):
    """One MPI request; ``test`` is safe to call from the progress thread and the main thread."""

    spin_s = SPIN_S

    def __init__(self, comm, collective, describe, request, result=None, finish=None):
        super().__init__(comm, collective, describe, result)
        self._request = request
        self._on_finish = finish
        self._lock = threading.Lock()

    @property
    def done(self):
        return self._done

    def _poll(self):
        return self._request.Test()

    def _finish(self):
        if self._on_finish is not None:
            self._on_finish()
        self._request = self._on_finish = None

    def _test_locked(self):
        if not self._done and self._poll():
            self._finish()
            self._done = True
        return self._done

    def test(self):
        if self._done:
            return True
        with self._lock:
            return self._test_locked()

    def try_test(self):
        """``test`` unless another thread is testing right now (the progress thread's form)."""
        if self._done or not self._lock.acquire(blocking=False):
            return self._done
        try:
            return self._test_locked()
        finally:
            self._lock.release()


class _Sum16Work(_MPIWork):
    """A 16-bit sum without a Python callback inside MPI: an alltoall gives each rank every rank's
    share of one chunk, the rank sums it in NumPy (``sum_rows_16``), and an allgather of the
    16-bit sums completes the buffer. Same bytes on the wire as a reduce-scatter + allgather.

    The allgather starts whenever the alltoall is seen complete (by either thread), so it runs on
    a communicator of its own, and in the order the sums were started (``_gathers``): MPI needs
    every rank to start a communicator's collectives in one order."""

    def __init__(self, comm, describe, buf, op):
        size = comm.size
        self._buf, self._op = buf, op
        flat = buf.reshape(-1).view(np.uint16)
        self._chunk = chunk = -(-flat.size // size)
        self._padded = flat if chunk * size == flat.size else np.zeros(chunk * size, np.uint16)
        if self._padded is not flat:
            self._padded[:flat.size] = flat
        self._rows = np.empty((size, chunk), np.uint16)
        self._u16 = u16 = comm._types[np.dtype(np.uint16)]
        self._summed = False
        self._gather = None
        request = comm.comm.Ialltoall([self._padded, chunk, u16], [self._rows, chunk, u16])
        super().__init__(comm, "allreduce", describe, request, result=buf)
        comm._gathers.append(self)

    def _poll(self):
        if self._gather is None:
            if not self._summed:
                if not self._request.Test():
                    return False
                comm, chunk = self.comm, self._chunk
                sum_rows_16(self._rows, self._op, self._padded[comm.rank * chunk:(comm.rank + 1) * chunk])
                self._rows = None
                self._summed = True
            self.comm._start_gathers()
            if self._gather is None:
                return False
        return self._gather.Test()

    def _start_gather(self):
        self._gather = self.comm._gather_comm.Iallgather(self.comm._mpi.IN_PLACE,
                                                         [self._padded, self._chunk, self._u16])

    def _finish(self):
        flat = self._buf.reshape(-1).view(np.uint16)
        if self._padded is not flat:
            flat[...] = self._padded[:flat.size]
        self._padded = self._gather = None
        super()._finish()


def _spans_nodes(MPI, comm) -> bool:
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_size() < comm.Get_size()
    finally:
        local.Free()


def _progress_thread_wanted(MPI, comm) -> bool:
    forced = os.environ.get(PROGRESS_ENV)
    if forced in ("0", "1"):
        wanted = forced == "1"
    else:
        wanted = comm.Get_size() > 1 and _spans_nodes(MPI, comm)
    return wanted and MPI.Query_thread() == MPI.THREAD_MULTIPLE


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
        self._cuda_aware = None
        self._gather_comm = self.comm.Dup()  # the second halves of 16-bit sums (_Sum16Work)
        self._gathers = collections.deque()
        self._gathers_lock = threading.Lock()
        self.progress_thread = ProgressThread() if _progress_thread_wanted(MPI, self.comm) else None
        if self.progress_thread is not None:
            atexit.register(self.progress_thread.stop)  # before mpi4py finalizes MPI (atexit is LIFO)

    def _start_gathers(self):
        """Start the allgathers of 16-bit sums whose own part is summed, oldest first."""
        with self._gathers_lock:
            while self._gathers and self._gathers[0]._summed:
                self._gathers.popleft()._start_gather()

    def _tracked(self, work):
        if self.progress_thread is not None:
            self.progress_thread.track(work)
        return work

    @property
    def aborts_job(self):
        return self.size > 1 and not abort_disabled()

    @property
    def reads_device_memory(self):
        if self._cuda_aware is None:
            self._cuda_aware = mpi_is_cuda_aware()
        return self._cuda_aware

    def abort(self, message):
        abort_job(message)

    def _typed(self, buf):
        """``buf`` as an MPI buffer spec; float16 travels as its uint16 bits."""
        if buf.dtype == np.float16:
            buf = buf.view(np.uint16)
        return [buf, self._types[buf.dtype]]

    def _iallreduce(self, buf, op, describe):
        if op in PAIRWISE_SUMS:
            return self._tracked(_Sum16Work(self, describe, buf, op))
        finish = None
        target = buf
        if buf.dtype == np.float16:
            target = buf.astype(np.float32)

            def finish():
                np.copyto(buf, target, casting="unsafe")

        request = self.comm.Iallreduce(self._mpi.IN_PLACE, self._typed(target), self._ops[op])
        return self._tracked(_MPIWork(self, "allreduce", describe, request, result=buf, finish=finish))

    def _ibroadcast(self, buf, root, describe):
        request = self.comm.Ibcast(self._typed(buf), root)
        return self._tracked(_MPIWork(self, "broadcast", describe, request, result=buf))

    def _iallgather(self, sendbuf, describe):
        recvbuf = np.empty((self.size, *sendbuf.shape), dtype=sendbuf.dtype)
        request = self.comm.Iallgather(self._typed(sendbuf), self._typed(recvbuf))
        return self._tracked(_MPIWork(self, "allgather", describe, request, result=recvbuf))

    def _ibarrier(self, describe):
        return self._tracked(_MPIWork(self, "barrier", describe, self.comm.Ibarrier()))
