"""The MPI backend (mpi4py, imported only here and only when used).

Arrays go to MPI as typed buffers, never as pickled objects. broadcast and allgather move any
dtype as its bytes. float16 has no standard MPI type: allreduce sums (or max/min/prod) a float32
copy and rounds back once. That costs twice the bytes on the wire for float16 buffers, and buys a more
accurate sum and no Python callback inside MPI's progress engine.

The 16-bit sums "sum_fp16" and "sum_bf16" (gradient compression) do keep 16 bits on the wire:
they are user-defined MPI ops whose Python callback applies ``sum16``'s pairwise sum, the same
NumPy arithmetic as the other backends. ``broadcast`` and ``allgather`` move any dtype as bytes.

No rank can leave the others waiting: MPI start-up has a deadline (``DDPGRAD_TIMEOUT``), an
uncaught exception aborts the job, and every rank that ends says goodbye to the others (see
``ExitChannel``), so ranks waiting in a collective the departed rank never called abort at once,
naming it, and a rank that exits non-zero ends the job unless every rank is exiting with it.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import sys
import threading
import time
import traceback

import numpy as np

from .base import POLL_PAUSE_MAX_S, SPIN_S, Communicator, Work, abort_disabled, resolve_timeout
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

LAUNCHER_RANK_ENV = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
"""Where launchers put this process's rank, to name it before MPI is up."""

def mpi_module():
    """``mpi4py.MPI``, initialised with a deadline; with an error that says how to get it.

    ``MPI_Init`` waits for every rank of the job: a rank that failed or hangs before it (a broken
    import on one node) would leave the others spinning there forever. So MPI is initialised
    here, while a watchdog process ends this one after ``DDPGRAD_TIMEOUT`` seconds (default 10
    minutes) with a message saying why.
    """
    try:
        import mpi4py  # noqa: PLC0415 - lazy on purpose: ddpgrad runs without MPI

        if "mpi4py.MPI" not in sys.modules:
            mpi4py.rc.initialize = False  # initialised below, under the watchdog
            mpi4py.rc.finalize = True
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            'the "mpi" backend needs mpi4py and an MPI library: pip install "ddpgrad[mpi]"'
        ) from exc
    if not MPI.Is_initialized():
        _initialize_with_deadline(MPI, resolve_timeout())
    return MPI


def launcher_rank() -> str:
    return next((os.environ[name] for name in LAUNCHER_RANK_ENV if name in os.environ), "?")


def _initialize_with_deadline(MPI, deadline_s: float):
    """``MPI_Init``, ended after ``deadline_s`` by a forked watchdog: mpi4py holds the GIL in
    ``MPI_Init``, so no thread of this process could act."""
    message = (
        f"[rank {launcher_rank()}] MPI start-up did not finish within {deadline_s:g} s: some rank of "
        f"the job failed or is still busy before init_process_group (look for its error above). If "
        f"start-up is only slow, raise DDPGRAD_TIMEOUT=<seconds>. Ending this rank.\n"
    )
    _flush(sys.stdout)
    _flush(sys.stderr)
    watch = _start_watchdog(deadline_s, message) if hasattr(os, "fork") else None
    MPI.Init_thread(MPI.THREAD_MULTIPLE)
    if watch is not None:
        done_fd, pid = watch
        os.close(done_fd)  # the watchdog sees end-of-file and exits
        os.waitpid(pid, 0)


def _start_watchdog(deadline_s: float, message: str):
    """A child process that kills this one unless ``done_fd`` (returned) is closed in time."""
    wait_fd, done_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the watchdog: plain system calls only, then _exit (no inherited state runs)
        try:
            os.close(done_fd)
            ready, _, _ = select.select([wait_fd], [], [], deadline_s)
            if not ready:
                os.write(2, message.encode())
                os.kill(os.getppid(), signal.SIGKILL)
        finally:
            os._exit(0)
    os.close(wait_fd)
    return done_fd, pid


ABORT_FLUSH_S = 0.25
"""Pause between writing the report and MPI_Abort: the launcher forwards each rank's stderr
through a pipe, and an abort can kill the job before the report has gone through (seen under
load: the job failed with no message)."""


def abort_job(message: str, code: int = 1):
    """Flush stdout, print ``message`` to stderr, each line prefixed with ``[rank N] ``, and end
    the MPI job with exit code ``code``."""
    MPI = mpi_module()
    _flush(sys.stdout)
    prefix = f"[rank {MPI.COMM_WORLD.Get_rank()}] "
    sys.stderr.write("".join(prefix + line + "\n" for line in message.rstrip("\n").split("\n")))
    _flush(sys.stderr)
    time.sleep(ABORT_FLUSH_S)
    MPI.COMM_WORLD.Abort(code)
    os._exit(code)  # MPI_Abort can return when another rank's abort is already ending the job


def _flush(stream):
    try:
        stream.flush()
    except (OSError, ValueError, AttributeError):  # closed or replaced: nothing left to save
        pass


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
    _line_buffered(sys.stdout)
    _abort_hooks_installed = True
    return True


def _line_buffered(stream):
    """Lines a rank prints reach the launcher at once, so an abort elsewhere can not lose them."""
    try:
        stream.reconfigure(line_buffering=True)
    except (AttributeError, ValueError, OSError):  # not a TextIOWrapper (replaced by a test harness)
        pass


# ---------------------------------------------------------------------------------------------
# Goodbyes: how the other ranks learn that a rank has ended.

EXIT_GRACE_S = 2.0
"""How long a rank exiting with a non-zero code waits for every other rank to exit too (they do
within milliseconds when a check failed on every rank) before it ends the whole job: inside the
5 s a job with a failed rank should take to end."""

GOODBYE_TAG = 7
GOODBYE_HEADER = 3  # world rank, exit code (or UNKNOWN_EXIT_CODE), number of counts that follow
GOODBYE_MAX_COMMUNICATORS = 256
UNKNOWN_EXIT_CODE = -(2**62)
_exit_status = []  # what sys.exit was last called with, if it was
_channel = None


def _recording_exit(original):
    def exit(status=None):  # noqa: A001 - stands in for sys.exit
        _exit_status[:] = [status]
        original(status)

    exit.__doc__ = original.__doc__
    return exit


def _exit_code():
    """This process's exit code if it is known (``sys.exit(n)``, an uncaught exception), else None."""
    if _exit_status:
        status = _exit_status[0]
        return 0 if status is None else status if isinstance(status, int) else 1
    if getattr(sys, "last_value", None) is not None:
        return 1
    return None


class ExitChannel:
    """A private duplicate of ``COMM_WORLD`` on which every rank says goodbye when it exits.

    A goodbye carries the rank, its exit code where known, and how many collectives it started on
    each world communicator. A rank waiting in a collective reads the channel between polls: a
    peer that left before starting that collective will never join it, so the job ends at once,
    naming that peer. At exit a rank waits for the others' goodbyes (MPI_Finalize would wait for
    them anyway): with a non-zero exit code for ``EXIT_GRACE_S``, then it ends the job; with exit
    code 0 for the communicator deadline, as the others may still be busy with their last work.
    """

    def __init__(self, MPI, comm: MPICommunicator):
        self._MPI = MPI
        self.rank, self.size = comm.rank, comm.size
        self.world, request = MPI.COMM_WORLD.Idup()
        _MPIWork(comm, "communicator duplication", "Comm.Idup of the exit channel", request).wait()
        self.timeout = comm.timeout
        self.communicators = []  # world communicators, in creation order (the same on every rank)
        self.departed = {}  # rank -> (exit code or None, collectives started per communicator)
        self._inbox = np.empty(GOODBYE_HEADER + GOODBYE_MAX_COMMUNICATORS, np.int64)
        self._status = MPI.Status()
        self._receive()
        self._sends = []
        atexit.register(self.at_exit)
        sys.exit = _recording_exit(sys.exit)  # once per process: there is one channel

    def register(self, comm) -> int:
        self.communicators.append(comm)
        return len(self.communicators) - 1

    def _receive(self):
        self._request = self.world.Irecv([self._inbox, self._MPI.INT64_T], source=self._MPI.ANY_SOURCE,
                                         tag=GOODBYE_TAG)

    def poll(self) -> dict:
        """Read the goodbyes that have arrived; return every departed rank so far."""
        while self._request.Test(self._status):
            message = self._inbox[: self._status.Get_count(self._MPI.INT64_T)].copy()
            rank, code, count = (int(v) for v in message[:GOODBYE_HEADER])
            self.departed[rank] = (None if code == UNKNOWN_EXIT_CODE else code, message[GOODBYE_HEADER:][:count])
            self._receive()
        return self.departed

    def stranded_by(self, index: int, seq: int):
        """(rank, exit code, calls) of a departed rank that never started call ``seq`` of world
        communicator ``index``, or None."""
        for rank, (code, calls) in self.poll().items():
            started = int(calls[index]) if index < len(calls) else 0
            if started <= seq:
                return rank, code, started
        return None

    def at_exit(self):
        if self._MPI.Is_finalized():  # the script finalized MPI itself: nothing left to say
            return
        code = _exit_code()
        calls = [c.calls for c in self.communicators][:GOODBYE_MAX_COMMUNICATORS]
        self._goodbye = np.array([self.rank, UNKNOWN_EXIT_CODE if code is None else code, len(calls), *calls],
                                 dtype=np.int64)
        self._sends = [self.world.Isend([self._goodbye, self._MPI.INT64_T], dest=peer, tag=GOODBYE_TAG)
                       for peer in range(self.size) if peer != self.rank]
        failed = code not in (None, 0)
        if self._wait_for_goodbyes(EXIT_GRACE_S if failed else self.timeout):
            self._MPI.Request.Waitall(self._sends)
            self._request.Cancel()
            self._request.Wait()
            return
        if abort_disabled():
            return
        staying = ", ".join(str(r) for r in range(self.size) if r != self.rank and r not in self.departed)
        if failed:
            abort_job(f"this rank exited with code {code} while rank(s) {staying} kept running, "
                      f"which can not finish without it: ending the job", code)
        abort_job(f"this rank finished, but rank(s) {staying} did not finish within {self.timeout:g} s "
                  f"(DDPGRAD_TIMEOUT): ending the job")

    def _wait_for_goodbyes(self, limit_s: float) -> bool:
        start = time.monotonic()
        while len(self.poll()) < self.size - 1:
            if time.monotonic() - start > limit_s:
                return False
            time.sleep(POLL_PAUSE_MAX_S)
        return True


def _departure_text(rank, code, started):
    reason = ("its script ended or raised SystemExit" if code is None else
              f"it exited with code {code}")
    return f"rank {rank} left the job after {started} collective call(s) here ({reason})"


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

    def _pause(self, seconds):
        index = self.comm.channel_index
        if index is not None and self.seq is not None:
            gone = _channel.stranded_by(index, self.seq)
            if gone is not None:
                self.comm.peer_left(self, *gone)
        time.sleep(seconds)

    def _finish(self):
        if self._on_finish is not None:
            self._on_finish()
        self._request = self._on_finish = None


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (default: all of ``MPI.COMM_WORLD``).

    Works on a duplicate of ``comm``, so ddpgrad's collectives never match a user's own MPI calls.
    """

    backend = "mpi"
    channel_index = None  # this communicator's number on the exit channel (world communicators)

    def __init__(self, comm=None, timeout: float | None = None):
        global _channel
        self._mpi = MPI = mpi_module()
        parent = MPI.COMM_WORLD if comm is None else comm
        super().__init__(parent.Get_rank(), parent.Get_size(), timeout)
        self.comm, request = parent.Idup()
        _MPIWork(self, "communicator duplication", "Comm.Idup at setup", request).wait()
        self._ops = {name: getattr(MPI, mpi_name) for name, mpi_name in _MPI_OP_NAMES.items()}
        self._types = {dtype: getattr(MPI, mpi_name) for dtype, mpi_name in _MPI_TYPE_NAMES.items()}
        if comm is None and self.size > 1:
            if _channel is None:
                _channel = ExitChannel(MPI, self)
            self.channel_index = _channel.register(self)

    def peer_left(self, work: Work, rank: int, code, started: int):
        """A rank left before joining ``work``'s collective: it can never complete."""
        message = (f"rank {self.rank} of {self.size}: {work.collective} #{work.seq} ({work.describe}) can "
                   f"never complete: {_departure_text(rank, code, started)}. Every rank must call the "
                   f"same collectives; ending the job.")
        if self.aborts_job:
            abort_job(message, code if code else 1)
        raise RuntimeError(message)

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

    def _bytes(self, buf):
        """``buf`` as raw bytes: broadcast and allgather move any dtype this way."""
        return [buf.reshape(-1).view(np.uint8), self._mpi.BYTE]

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
        request = self.comm.Ibcast(self._bytes(buf), root)
        return _MPIWork(self, "broadcast", describe, request, result=buf)

    def _iallgather(self, sendbuf, describe):
        recvbuf = np.empty((self.size, *sendbuf.shape), dtype=sendbuf.dtype)
        request = self.comm.Iallgather(self._bytes(sendbuf), self._bytes(recvbuf))
        return _MPIWork(self, "allgather", describe, request, result=recvbuf)

    def _ibarrier(self, describe):
        return _MPIWork(self, "barrier", describe, self.comm.Ibarrier())
