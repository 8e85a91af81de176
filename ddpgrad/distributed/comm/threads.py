"""N ranks as threads of one process: fast distributed tests, and every rank in one debugger.

Ranks meet per collective call: the k-th collective of every rank joins the k-th rendezvous (as in
MPI, calls match by order). The last rank to arrive checks that all agree on kind, shape and dtype,
computes the result in rank order (so every rank gets the same bits) and wakes the others.
"""

from __future__ import annotations

import threading

import numpy as np

from ... import random
from .base import Communicator, CollectiveMismatch, Work
from .sum16 import PAIRWISE_SUMS, sum_rows_16

JOIN_GRACE_S = 5.0
"""After a rank fails, how long ``launch_threads`` waits for the others to unwind before raising.
They get an error at their next collective, so this is generous; the threads are daemons, so a
straggler can not keep the process alive."""

_UFUNCS = {"sum": np.add, "max": np.maximum, "min": np.minimum, "prod": np.multiply}
_NO_BUFFER = np.empty(0, dtype=np.uint8)
_current = threading.local()


def current_thread_communicator() -> ThreadsCommunicator | None:
    """The communicator of the ``launch_threads`` rank running this thread, or None."""
    return getattr(_current, "comm", None)


class RankFailed(RuntimeError):
    """A rank started by ``launch_threads`` raised (its exception chained as ``__cause__``), or
    returned while other ranks waited in a collective it never called. ``rank`` is that rank."""

    def __init__(self, rank: int, size: int, exc: BaseException | None = None, *,
                 returned_after: int | None = None, waiting: str | None = None):
        self.rank = rank
        self.returned_after = returned_after
        if exc is not None:
            what = f"rank {rank} of {size} raised {type(exc).__name__}: {exc}"
        else:
            what = (f"rank {rank} of {size} returned after {returned_after} collective call(s), so it "
                    f"never joins it: every rank must call the same collectives")
        super().__init__(what if waiting is None else f"{waiting} can not complete: {what}")


# ---------------------------------------------------------------------------------------------
# What the last rank to arrive computes: one result per rank.


def _allreduce(bufs, op):
    if op in PAIRWISE_SUMS:  # 16-bit sums: float32 in rank order, rounded once (as the MPI backend)
        total = sum_rows_16(np.stack(bufs), op, np.empty_like(bufs[0]))
        for buf in bufs:
            np.copyto(buf, total)
        return bufs
    # float16 "sum" accumulates in float32 and rounds once, like the MPI backend.
    accumulator = bufs[0].astype(np.float32 if bufs[0].dtype == np.float16 else bufs[0].dtype)
    for buf in bufs[1:]:
        _UFUNCS[op](accumulator, buf, out=accumulator)
    for buf in bufs:
        np.copyto(buf, accumulator, casting="unsafe")
    return bufs


def _broadcast(bufs, root):
    for buf in bufs:
        if buf is not bufs[root]:
            np.copyto(buf, bufs[root])
    return bufs


def _allgather(bufs, _):
    stacked = np.stack(bufs)
    return [stacked] + [stacked.copy() for _ in bufs[1:]]


def _barrier(bufs, _):
    return [None] * len(bufs)


_COMPUTE = {"allreduce": _allreduce, "broadcast": _broadcast, "allgather": _allgather, "barrier": _barrier}


def _signature_text(signature):
    kind, param, shape, dtype = signature
    detail = "" if param is None else f"({param})"
    return f"{kind}{detail} shape {shape} {dtype}"


class _Rendezvous:
    """One collective call, as deposited by each rank."""

    def __init__(self, size: int):
        self.signatures = [None] * size
        self.bufs = [None] * size
        self.arrived = 0
        self.results = None
        self.error = None
        self.done = False
        self.event = threading.Event()

    def complete(self, seq: int):
        if any(s != self.signatures[0] for s in self.signatures):
            ranks = "; ".join(f"rank {r}: {_signature_text(s)}" for r, s in enumerate(self.signatures))
            self.error = CollectiveMismatch(
                f"ranks disagree on collective call #{seq}: {ranks}. Every rank must call the same "
                f"collectives in the same order, with the same shapes and dtypes."
            )
        else:
            kind, param = self.signatures[0][:2]
            try:
                self.results = _COMPUTE[kind](self.bufs, param)
            except Exception as exc:  # reported on every rank, not only the one that computed
                self.error = exc
        self.bufs = None
        self.done = True
        self.event.set()


class ThreadWorld:
    """What the thread ranks of one world share: pending rendezvous, and the first failure."""

    def __init__(self, size: int):
        self.size = size
        self.failure = None  # (rank, exception) of the first rank that raised
        self.returned = {}  # rank -> collective calls it made, for ranks whose function returned
        self._cond = threading.Condition()
        self._pending = {}
        self._finished = 0

    def join(self, rank: int, seq: int, signature, buf, describe: str) -> _Rendezvous:
        with self._cond:
            if self.failure is not None:
                raise _abandoned(rank, self.size, f"{signature[0]} #{seq} ({describe})", self.failure)
            self.check_departed(rank, seq, signature[0], describe)
            rendezvous = self._pending.setdefault(seq, _Rendezvous(self.size))
            rendezvous.signatures[rank] = signature
            rendezvous.bufs[rank] = buf
            rendezvous.arrived += 1
            last = rendezvous.arrived == self.size
            if last:
                del self._pending[seq]
        if last:
            rendezvous.complete(seq)
        return rendezvous

    def fail(self, rank: int, exc: BaseException):
        """Mark the world broken: ranks waiting in a collective, or starting one, get an error."""
        with self._cond:
            if self.failure is None:
                self.failure = (rank, exc)
            pending = list(self._pending.values())
            self._cond.notify_all()
        for rendezvous in pending:
            rendezvous.event.set()

    def rank_finished(self, rank: int, calls: int, returned: bool):
        """Rank ``rank`` is done; if its function returned after ``calls`` collectives, wake the
        ranks waiting in a later one (they can never complete)."""
        with self._cond:
            self._finished += 1
            if returned:
                self.returned[rank] = calls
            stranded = [r for seq, r in self._pending.items() if seq >= calls] if returned else []
            self._cond.notify_all()
        for rendezvous in stranded:
            rendezvous.event.set()

    def check_departed(self, rank: int, seq: int, collective: str, describe: str):
        """Raise ``RankFailed`` if some rank returned before making collective call ``seq``."""
        for gone, calls in list(self.returned.items()):
            if calls <= seq:
                raise RankFailed(gone, self.size, returned_after=calls,
                                 waiting=f"rank {rank}: {collective} #{seq} ({describe})")

    def wait(self, until_all_finished: bool, timeout: float | None = None):
        with self._cond:
            self._cond.wait_for(
                lambda: self._finished == self.size or (self.failure is not None and not until_all_finished),
                timeout,
            )


def _abandoned(rank, size, collective, failure):
    failed_rank, exc = failure
    waiting = f"rank {rank}: {collective}"
    if isinstance(exc, RankFailed) and exc.returned_after is not None:  # the cause is the rank that left
        return RankFailed(exc.rank, size, returned_after=exc.returned_after, waiting=waiting)
    return RankFailed(failed_rank, size, exc, waiting=waiting)


class _ThreadWork(Work):
    def __init__(self, comm, collective, describe, rendezvous, result, seq):
        super().__init__(comm, collective, describe, result)
        self._rendezvous = rendezvous
        self._seq = seq

    def _poll(self):
        rendezvous = self._rendezvous
        if rendezvous.done:
            if isinstance(rendezvous.error, CollectiveMismatch):
                raise CollectiveMismatch(f"rank {self.comm.rank}: {rendezvous.error}")
            if rendezvous.error is not None:
                raise RuntimeError(f"{self.collective} failed: {rendezvous.error!r}") from rendezvous.error
            return True
        world = self.comm.world
        if world.failure is not None:
            raise _abandoned(self.comm.rank, world.size, f"{self.collective} #{self._seq} ({self.describe})",
                             world.failure)
        world.check_departed(self.comm.rank, self._seq, self.collective, self.describe)
        return False

    def _finish(self):
        self.result = self._rendezvous.results[self.comm.rank]

    def _pause(self, seconds):
        self._rendezvous.event.wait(seconds)


class ThreadsCommunicator(Communicator):
    """Rank ``rank`` of a ``ThreadWorld``; usually made by ``launch_threads``."""

    backend = "threads"
    checks_calls_itself = True

    def __init__(self, world: ThreadWorld, rank: int, timeout: float | None = None):
        super().__init__(rank, world.size, timeout)
        self.world = world

    def _start(self, kind, param, buf, describe, result=None):
        seq = self.calls - 1  # keys the rendezvous: the k-th call of every rank meets the others' k-th
        rendezvous = self.world.join(self.rank, seq, (kind, param, buf.shape, buf.dtype), buf, describe)
        return _ThreadWork(self, kind, describe, rendezvous, result, seq)

    def _iallreduce(self, buf, op, describe):
        return self._start("allreduce", op, buf, describe)

    def _ibroadcast(self, buf, root, describe):
        return self._start("broadcast", root, buf, describe)

    def _iallgather(self, sendbuf, describe):
        return self._start("allgather", None, sendbuf, describe)

    def _ibarrier(self, describe):
        return self._start("barrier", None, _NO_BUFFER, describe)


def launch_threads(fn, world_size: int, args=(), kwargs=None, timeout: float | None = None) -> list:
    """Run ``fn(*args, **kwargs)`` on ``world_size`` thread ranks; return their results by rank.

    Inside ``fn``, ``current_thread_communicator()`` is that rank's communicator. If a rank raises,
    or returns while others wait in a collective it never called, the others get ``RankFailed`` at
    once in that collective (or their next), and this raises ``RankFailed`` naming that rank (the
    exception it raised chained as ``__cause__``).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    world = ThreadWorld(world_size)
    comms = [ThreadsCommunicator(world, rank, timeout) for rank in range(world_size)]
    kwargs = kwargs or {}
    results = [None] * world_size

    def run(comm):
        _current.comm = comm
        random.use_thread_generator()  # each rank draws from its own stream, as a process would
        returned = False
        try:
            results[comm.rank] = fn(*args, **kwargs)
            returned = True
        except BaseException as exc:  # noqa: BLE001 - reported to the launcher, re-raised there
            world.fail(comm.rank, exc)
        finally:
            _current.comm = None
            random.use_thread_generator(None)
            world.rank_finished(comm.rank, comm.calls, returned)

    for comm in comms:
        threading.Thread(target=run, args=(comm,), name=f"ddpgrad-rank-{comm.rank}", daemon=True).start()
    world.wait(until_all_finished=False)
    if world.failure is None:
        return results
    world.wait(until_all_finished=True, timeout=JOIN_GRACE_S)
    rank, exc = world.failure
    if isinstance(exc, RankFailed) and exc.returned_after is not None:
        raise exc  # names the rank that returned early, not the one left waiting for it
    raise RankFailed(rank, world_size, exc) from exc
