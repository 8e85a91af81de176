"""The MPI backend (mpi4py, imported only here and only when used).

Arrays go to MPI as typed buffers, never as pickled objects. broadcast and allgather move any
dtype as its bytes. float16 has no standard MPI type: allreduce sums (or max/min/prod) a float32
copy and rounds back once. That costs twice the bytes on the wire for float16 buffers, and buys a more
accurate sum and no Python callback inside MPI's progress engine.

The 16-bit sums "sum_fp16" and "sum_bf16" (gradient compression) do keep 16 bits on the wire,
without a Python callback inside MPI (a user-defined op would run one per message, on the progress
path): an alltoall and an allgather of 16-bit chunks, with the sum done in NumPy between them
(``_Sum16Work``), the same arithmetic as the other backends.

``DDPGRAD_PROGRESS_THREAD=1`` adds a thread that keeps collectives moving while the main thread
computes (measured: no faster across simulated nodes, so off by default).

No rank can leave the others waiting: MPI start-up has a deadline (``DDPGRAD_TIMEOUT``), an
uncaught exception aborts the job, and every rank that ends says goodbye to the others (see
``ExitChannel``), so ranks waiting in a collective the departed rank never called abort at once,
naming it, and a rank that exits non-zero ends the job unless every rank is exiting with it.
"""

from __future__ import annotations

import atexit
import collections
import os
import select
import signal
import sys
import threading
import time
import traceback

import numpy as np

from ..staging import mpi_is_cuda_aware
from .base import POLL_PAUSE_MAX_S, SPIN_S, Communicator, Work, abort_disabled, resolve_timeout
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
        # One receive per peer: a wildcard (ANY_SOURCE) receive re-posted after each message loses
        # messages under UCX over TCP between hosts (seen on the simulated cluster).
        self._peers = [p for p in range(self.size) if p != self.rank]
        self._inboxes = np.empty((len(self._peers), GOODBYE_HEADER + GOODBYE_MAX_COMMUNICATORS), np.int64)
        self._requests = [self.world.Irecv([self._inboxes[k], MPI.INT64_T], source=peer, tag=GOODBYE_TAG)
                          for k, peer in enumerate(self._peers)]
        self._statuses = [MPI.Status() for _ in self._peers]
        self._sends = []
        atexit.register(self.at_exit)
        sys.exit = _recording_exit(sys.exit)  # once per process: there is one channel

    def register(self, comm) -> int:
        self.communicators.append(comm)
        return len(self.communicators) - 1

    def poll(self) -> dict:
        """Read the goodbyes that have arrived; return every departed rank so far."""
        if len(self.departed) < len(self._peers):
            done = self._MPI.Request.Testsome(self._requests, self._statuses) or []
            for j, k in enumerate(done):  # MPI fills the statuses in the order of the indices
                message = self._inboxes[k][: self._statuses[j].Get_count(self._MPI.INT64_T)].copy()
                rank, code, count = (int(v) for v in message[:GOODBYE_HEADER])
                self.departed[rank] = (None if code == UNKNOWN_EXIT_CODE else code, message[GOODBYE_HEADER:][:count])
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


PROGRESS_ENV = "DDPGRAD_PROGRESS_THREAD"
""""1" starts a progress thread per communicator (see ``ProgressThread``); off by default: on two
simulated nodes over TCP (MLP 784-1024-1024-10, 1 rank per node, 2 cores) the DDP step was as
fast or faster without it at every rate (unlimited 29.0 vs 28.7 ms, 10 Gb/s 27.8 vs 33.4, 2 Gb/s
48.3 vs 49.4, 1 Gb/s 82.5 vs 85.2): the kernel's socket buffers carry a bucket's bytes while
backward computes, and the hooks' tests refill them often enough (benchmarks/README.md)."""

PROGRESS_INTERVAL_S = 100e-6
"""Pause between two rounds of the progress thread: at 1 Gb/s a TCP socket drains about 12 KB in
that time, far less than its buffer, so the link never idles while the thread runs."""


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
                self._sum()
            self.comm._start_gathers()
            if self._gather is None:
                return False
        return self._gather.Test()

    def _sum(self):
        comm, chunk = self.comm, self._chunk
        sum_rows_16(self._rows, self._op, self._padded[comm.rank * chunk:(comm.rank + 1) * chunk])
        self._rows = None
        self._summed = True

    def try_sum(self) -> bool:
        """Sum this rank's chunk if the alltoall is done (unless another thread is at it)."""
        if self._summed:
            return True
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if not self._summed and self._request.Test():
                self._sum()
            return self._summed
        finally:
            self._lock.release()

    def _start_gather(self):
        self._gather = self.comm._gather_comm.Iallgather(self.comm._mpi.IN_PLACE,
                                                         [self._padded, self._chunk, self._u16])

    def _finish(self):
        flat = self._buf.reshape(-1).view(np.uint16)
        if self._padded is not flat:
            flat[...] = self._padded[:flat.size]
        self._padded = self._gather = None
        super()._finish()


def _progress_thread_wanted(MPI) -> bool:
    return os.environ.get(PROGRESS_ENV) == "1" and MPI.Query_thread() == MPI.THREAD_MULTIPLE


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
        self._cuda_aware = None
        self._gather_comm = self.comm.Dup()  # the second halves of 16-bit sums (_Sum16Work)
        self._gathers = collections.deque()
        self._gathers_lock = threading.Lock()
        self.progress_thread = ProgressThread() if _progress_thread_wanted(MPI) else None
        if self.progress_thread is not None:
            atexit.register(self.progress_thread.stop)  # before mpi4py finalizes MPI (atexit is LIFO)
        if comm is None and self.size > 1:
            if _channel is None:
                _channel = ExitChannel(MPI, self)
            self.channel_index = _channel.register(self)

    def _start_gathers(self):
        """Start the allgathers of 16-bit sums whose own part is summed, oldest first."""
        with self._gathers_lock:  # the oldest first, driving it on (it may be waited on last)
            while self._gathers and self._gathers[0].try_sum():
                self._gathers.popleft()._start_gather()

    def _tracked(self, work):
        if self.progress_thread is not None:
            self.progress_thread.track(work)
        return work

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

    def _bytes(self, buf):
        """``buf`` as raw bytes: broadcast and allgather move any dtype this way."""
        return [buf.reshape(-1).view(np.uint8), self._mpi.BYTE]

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
        request = self.comm.Ibcast(self._bytes(buf), root)
        return self._tracked(_MPIWork(self, "broadcast", describe, request, result=buf))

    def _iallgather(self, sendbuf, describe):
        recvbuf = np.empty((self.size, *sendbuf.shape), dtype=sendbuf.dtype)
        request = self.comm.Iallgather(self._bytes(sendbuf), self._bytes(recvbuf))
        return self._tracked(_MPIWork(self, "allgather", describe, request, result=recvbuf))

    def _ibarrier(self, describe):
        return self._tracked(_MPIWork(self, "barrier", describe, self.comm.Ibarrier()))
