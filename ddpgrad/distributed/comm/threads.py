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
    """A rank started by ``launch_threads`` raised; its exception is chained as ``__cause__``."""

    def __init__(self, rank: int, size: int, exc: BaseException):
        self.rank = rank
        super().__init__(f"rank {rank} of {size} raised {type(exc).__name__}: {exc}")


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
        self._cond = threading.Condition()
        self._pending = {}
        self._finished = 0

    def join(self, rank: int, seq: int, signature, buf) -> _Rendezvous:
        with self._cond:
            if self.failure is not None:
                raise _abandoned(rank, signature[0], self.failure)
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

    def rank_finished(self):
        with self._cond:
            self._finished += 1
            self._cond.notify_all()

    def wait(self, until_all_finished: bool, timeout: float | None = None):
        with self._cond:
            self._cond.wait_for(
                lambda: self._finished == self.size or (self.failure is not None and not until_all_finished),
                timeout,
            )


def _abandoned(rank, collective, failure):
    failed_rank, exc = failure
    return RuntimeError(
        f"rank {rank}: {collective} abandoned because rank {failed_rank} failed "
        f"({type(exc).__name__}: {exc})"
    )


class _ThreadWork(Work):
    def __init__(self, comm, collective, describe, rendezvous, result):
        super().__init__(comm, collective, describe, result)
        self._rendezvous = rendezvous

    def _poll(self):
        rendezvous = self._rendezvous
        if rendezvous.done:
            if isinstance(rendezvous.error, CollectiveMismatch):
                raise CollectiveMismatch(f"rank {self.comm.rank}: {rendezvous.error}")
            if rendezvous.error is not None:
                raise RuntimeError(f"{self.collective} failed: {rendezvous.error!r}") from rendezvous.error
            return True
        if self.comm.world.failure is not None:
            raise _abandoned(self.comm.rank, f"{self.collective} ({self.describe})", self.comm.world.failure)
        return False

    def _finish(self):
        self.result = self._rendezvous.results[self.comm.rank]

    def _pause(self, seconds):
        self._rendezvous.event.wait(seconds)


class ThreadsCommunicator(Communicator):
    """Rank ``rank`` of a ``ThreadWorld``; usually made by ``launch_threads``."""

    backend = "threads"

    def __init__(self, world: ThreadWorld, rank: int, timeout: float | None = None):
        super().__init__(rank, world.size, timeout)
        self.world = world
        self._calls = 0  # keys the rendezvous: the k-th call of every rank meets the others' k-th

    def _start(self, kind, param, buf, describe, result=None):
        seq, self._calls = self._calls, self._calls + 1
        rendezvous = self.world.join(self.rank, seq, (kind, param, buf.shape, buf.dtype), buf)
        return _ThreadWork(self, kind, describe, rendezvous, result)

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
    the others get an error at their next (or current) collective, and this raises ``RankFailed``
    naming the first rank that failed, its exception chained.
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
        try:
            results[comm.rank] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the launcher, re-raised there
            world.fail(comm.rank, exc)
        finally:
            _current.comm = None
            random.use_thread_generator(None)
            world.rank_finished()

    for comm in comms:
        threading.Thread(target=run, args=(comm,), name=f"ddpgrad-rank-{comm.rank}", daemon=True).start()
    world.wait(until_all_finished=False)
    if world.failure is None:
        return results
    world.wait(until_all_finished=True, timeout=JOIN_GRACE_S)
    rank, exc = world.failure
    raise RankFailed(rank, world_size, exc) from exc
