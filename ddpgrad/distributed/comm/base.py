"""The communicator interface every backend implements, its deadline, and what a timeout does.

A collective is started non-blocking and returns a ``Work`` handle; the blocking form is the same
call followed by ``Work.wait()``, which polls ``test()`` until done or until the communicator's
``timeout`` has passed. So no collective can wait forever.
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np

from ...backend import is_cuda_array
from ..staging import HostStaging, synchronize_for_direct_access
from .sum16 import PAIRWISE_SUMS

# ---------------------------------------------------------------------------------------------
# Defaults, each with its reason.

DEFAULT_TIMEOUT_S = 600.0
"""10 minutes: longer than any healthy step (first-step setup, a checkpoint on a slow disk), short
enough that a hung job gives its allocation back within the hour."""

TIMEOUT_ENV = "DDPGRAD_TIMEOUT"
"""Seconds; overrides ``DEFAULT_TIMEOUT_S`` for every communicator not given an explicit timeout."""

NO_ABORT_ENV = "DDPGRAD_NO_ABORT"
"""Set to "1" to raise instead of aborting the MPI job on an error (for debugging one rank)."""

DEBUG_ENV = "DDPGRAD_DEBUG"
"""Set to "1" to check every collective's fingerprint across ranks before it runs (one small
allgather each: slower, and non-blocking collectives start only once every rank has called them)."""

SPIN_S = 0.02
"""How long an MPI wait re-tests back to back, yielding the core between tests, before it starts
sleeping: MPICH moves data only inside MPI calls, so a sleeping rank stalls its collective.
Measured on the 784-1024-1024-10 MLP's gradients, 2 ranks on 2 cores: bucketed sync 8.8x -> 1.6x
one raw MPI_Allreduce. Yielding still hands the core to other ranks when they outnumber cores."""

POLL_PAUSE_MIN_S = 20e-6
"""First pause between two ``test()`` calls: about a small allreduce's latency, so short
collectives are not slowed down by the wait loop."""

POLL_PAUSE_MAX_S = 1e-3
"""The pause doubles up to this: at most 1 ms added latency, while a waiting rank leaves its core
to the others (ranks often outnumber cores)."""

REDUCE_OPS = ("sum", "max", "min", "prod")
"""Element-wise reductions; an average is a sum divided by ``size`` by the caller."""

SUM16_OPS = {op: dtype for op, (dtype, _) in PAIRWISE_SUMS.items()}
"""Sums that keep 16 bits on the wire (gradient compression): "sum_fp16" on float16 buffers and
"sum_bf16" on bfloat16 bit patterns in uint16 buffers; every partial sum is rounded to 16 bits
(see ``sum16``). A float16 buffer's plain "sum" is instead accumulated in float32 (more accurate,
twice the bytes on MPI)."""

SUPPORTED_DTYPES = tuple(
    np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.uint16, np.uint8)
)
"""What ``allreduce`` reduces (uint16 carries bfloat16 bit patterns). ``broadcast`` and
``allgather`` move any dtype without Python objects (bool, int8, complex, ...) as its bytes."""


def resolve_timeout(timeout=None) -> float:
    """The deadline in seconds: ``timeout`` if given, else ``$DDPGRAD_TIMEOUT``, else the default."""
    source = "timeout"
    if timeout is None:
        timeout, source = os.environ.get(TIMEOUT_ENV), TIMEOUT_ENV
    if timeout is None:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(timeout)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{source} must be a positive number of seconds, got {timeout!r}")
    return seconds


def abort_disabled() -> bool:
    return os.environ.get(NO_ABORT_ENV) == "1"


# ---------------------------------------------------------------------------------------------
# Errors.


class CollectiveTimeout(RuntimeError):
    """A collective did not complete within the communicator's timeout."""

    def __init__(self, work: Work, waited: float):
        self.comm, self.collective, self.describe, self.waited = work.comm, work.collective, work.describe, waited
        super().__init__(
            f"rank {work.comm.rank} of {work.comm.size}: {work.collective} ({work.describe}) did not "
            f"complete after waiting {waited:.1f} s. Some rank never joined it: check that every "
            f"rank calls the same collectives in the same order (no rank skipped a step, took "
            f"another branch, or died); if a rank is only slow, raise {TIMEOUT_ENV}=<seconds>."
        )


class CollectiveMismatch(RuntimeError):
    """Ranks called different collectives, or the same one with different shapes or dtypes."""


def on_timeout(exc: CollectiveTimeout):
    """What every collective timeout does: end the whole job when the ranks are separate processes
    (the others would wait forever), else raise ``exc`` to the caller."""
    if exc.comm.aborts_job:
        exc.comm.abort(str(exc))
    raise exc


# ---------------------------------------------------------------------------------------------
# Fingerprints: what a rank is about to do, as int64s that ranks compare (under DDPGRAD_DEBUG=1
# before every collective; the reducer's per-step check uses the same helpers).

COLLECTIVE_KINDS = ("allreduce", "broadcast", "allgather", "barrier")
COLLECTIVE_OPS = REDUCE_OPS + tuple(SUM16_OPS)
FINGERPRINT_LEN = 5
"""kind, element count, dtype code, sequence number, parameter (allreduce op, broadcast root)."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def dtype_code(dtype) -> int:
    """A dtype as one integer, the same on every platform: its kind letter and its item size."""
    dtype = np.dtype(dtype)
    return ord(dtype.kind) << 32 | dtype.itemsize


def _dtype_text(code: int) -> str:
    kind, itemsize = chr(code >> 32), code & 0xFFFFFFFF
    try:
        return str(np.dtype(f"{kind}{itemsize}"))
    except TypeError:
        return f"{kind}{itemsize}"


def pack_fingerprint(kind: str, count: int, dtype, sequence: int, param=0) -> np.ndarray:
    """``FINGERPRINT_LEN`` int64s naming one collective call; equal on all ranks iff they match.

    ``param`` is the allreduce op name (or its index in ``COLLECTIVE_OPS``) or the broadcast root.
    """
    if isinstance(param, str):
        param = COLLECTIVE_OPS.index(param)
    return np.array([COLLECTIVE_KINDS.index(kind), count, dtype_code(dtype), sequence, param], np.int64)


def fingerprint_text(row) -> str:
    kind, count, code, sequence, param = (int(v) for v in row)
    name = COLLECTIVE_KINDS[kind] if 0 <= kind < len(COLLECTIVE_KINDS) else f"kind {kind}"
    detail = ""
    if name == "allreduce" and 0 <= param < len(COLLECTIVE_OPS):
        detail = f"({COLLECTIVE_OPS[param]})"
    elif name == "broadcast":
        detail = f"(root={param})"
    body = "" if name == "barrier" else f" of {count} x {_dtype_text(code)}"
    return f"#{sequence} {name}{detail}{body}"


def fingerprint_mismatch(rows) -> str | None:
    """None when every rank's fingerprint (a row of ``rows``, by rank) is the same, else a
    message naming each group of ranks and what it called."""
    rows = np.asarray(rows, dtype=np.int64).reshape(len(rows), FINGERPRINT_LEN)
    if (rows == rows[0]).all():
        return None
    groups = {}
    for rank, row in enumerate(rows):
        groups.setdefault(fingerprint_text(row), []).append(rank)
    sides = "; ".join(f"{_ranks_text(ranks)} called {text}" for text, ranks in groups.items())
    return (f"collectives out of step across ranks: {sides}. Every rank must call the same "
            f"collectives in the same order, with the same element counts and dtypes.")


def _ranks_text(ranks) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


# ---------------------------------------------------------------------------------------------
# Handles and the interface.


class Work:
    """Handle of a started collective: ``wait()`` for it, or ask ``test()`` whether it is done.

    ``describe`` names the operation in timeout messages; callers may set it, e.g.
    "allreduce of bucket 3 (1.2 MB float32) at step 17". ``wait()`` returns ``result``: the
    buffer for in-place collectives, the gathered array for allgather.
    """

    def __init__(self, comm, collective: str, describe: str, result=None):
        self.comm = comm
        self.collective = collective
        self.describe = describe
        self.result = result
        self.seq = None  # this call's number on its communicator (set by Communicator)
        self._done = False

    def _poll(self) -> bool:
        """Backend hook: drive progress, say whether the collective has completed."""
        return True

    def _finish(self):
        """Backend hook: runs once, on completion (copy out of scratch buffers)."""

    def _pause(self, seconds: float):
        """Backend hook: wait between polls; may return early when progress is signalled."""
        time.sleep(seconds)

    def test(self) -> bool:
        """True once the collective has completed; never blocks."""
        if not self._done and self._poll():
            self._done = True
            self._finish()
        return self._done

    spin_s = 0.0
    """Seconds of back-to-back re-testing before sleeping (backends that progress only when
    tested set ``SPIN_S``)."""

    def wait(self, timeout: float | None = None):
        """Block until done; after ``timeout`` (default: the communicator's) seconds, time out."""
        limit = self.comm.timeout if timeout is None else timeout
        start = time.monotonic()
        spin_until = start + min(self.spin_s, limit)
        pause = POLL_PAUSE_MIN_S
        while not self.test():
            now = time.monotonic()
            if now < spin_until:
                _yield_core()
                continue
            waited = now - start
            if waited >= limit:
                on_timeout(CollectiveTimeout(self, waited))
            self._pause(min(pause, limit - waited))
            pause = min(2 * pause, POLL_PAUSE_MAX_S)
        return self.result


_yield_core = getattr(os, "sched_yield", lambda: time.sleep(0))


def _describe(collective: str, buf: np.ndarray) -> str:
    return f"{collective} of {buf.nbytes / 1e6:.3g} MB {buf.dtype} shape {buf.shape}"


def _check_buffer(buf, collective: str, writable: bool = True, reduces: bool = False):
    if not isinstance(buf, np.ndarray) and not hasattr(buf, "__cuda_array_interface__"):
        raise TypeError(f"{collective} takes a NumPy array (or a CuPy array with a CUDA-aware MPI), "
                        f"got {type(buf).__name__}")
    if reduces and buf.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise TypeError(f"{collective} does not support dtype {buf.dtype}; use one of {names}")
    if buf.dtype.hasobject:
        raise TypeError(f"{collective} can not move Python objects (dtype {buf.dtype}); use "
                        f"{collective}_object for picklable values")
    if not buf.flags.c_contiguous:
        raise ValueError(
            f"{collective} needs a C-contiguous array (shape {buf.shape}, strides {buf.strides}); "
            f"pass np.ascontiguousarray(buf) and copy the result back"
        )
    if writable and not buf.flags.writeable:
        raise ValueError(f"{collective} works in place and needs a writeable array")


class Communicator:
    """A group of ``size`` ranks; this process (or thread) is ``rank``.

    Collectives take C-contiguous NumPy arrays (size 0 is fine; ``allreduce`` the numeric dtypes of
    ``SUPPORTED_DTYPES``, the others any dtype) and must be called by every rank in the same order. Blocking forms wait at most
    ``timeout`` seconds (see ``resolve_timeout``).
    """

    backend = "abstract"
    checks_calls_itself = False
    """True for backends that detect mismatched calls themselves (threads)."""

    def __init__(self, rank: int, size: int, timeout: float | None = None):
        self.rank = rank
        self.size = size
        self.timeout = resolve_timeout(timeout)
        self.calls = 0  # collectives started so far; the next one's sequence number
        self._fingerprints = size > 1 and debug_enabled() and not self.checks_calls_itself
        self._staging = None

    @property
    def reads_device_memory(self) -> bool:
        """Whether collectives can read GPU (CuPy) arrays directly; else they are staged through
        pinned host memory (``staging.HostStaging``)."""
        return False

    def _route(self, buf, start, in_place=True, host_only=False) -> Work:
        """Start ``start(buf)``, staging a device ``buf`` through the host when needed (always,
        with ``host_only``: the backend computes on it with NumPy); keeps collectives in call
        order on every rank."""
        if self.size > 1 and is_cuda_array(buf) and (host_only or not self.reads_device_memory):
            if self._staging is None:
                self._staging = HostStaging()
            return self._staging.start(buf, start, in_place)
        if self._staging is not None:
            self._staging.launch()
        synchronize_for_direct_access(buf)
        return start(buf)

    def __repr__(self):
        return f"<{type(self).__name__} rank {self.rank} of {self.size}, timeout {self.timeout:g} s>"

    @property
    def aborts_job(self) -> bool:
        """Whether a timeout ends the whole job (separate processes) rather than raising."""
        return False

    def abort(self, message: str):
        raise NotImplementedError(f"{type(self).__name__} can not abort a job")

    # -- backend hooks: start a collective on an already-checked buffer, return its Work -------
    def _iallreduce(self, buf, op, describe) -> Work:
        raise NotImplementedError

    def _ibroadcast(self, buf, root, describe) -> Work:
        raise NotImplementedError

    def _iallgather(self, sendbuf, describe) -> Work:
        raise NotImplementedError

    def _ibarrier(self, describe) -> Work:
        raise NotImplementedError

    def _next_call(self, kind, buf, param) -> int:
        """Number this call; under DDPGRAD_DEBUG=1 first check that every rank makes the same one."""
        seq, self.calls = self.calls, self.calls + 1
        if self._fingerprints:
            if self._staging is not None:
                self._staging.launch()  # staged collectives started before this one go out first
            count, dtype = (0, np.uint8) if buf is None else (buf.size, buf.dtype)
            check = self._numbered(self._iallgather(pack_fingerprint(kind, count, dtype, seq, param),
                                                    f"fingerprint of collective #{seq}"), seq)
            problem = fingerprint_mismatch(check.wait())
            if problem:
                raise CollectiveMismatch(f"rank {self.rank} of {self.size}: {problem}")
        return seq

    @staticmethod
    def _numbered(work: Work, seq: int) -> Work:
        work.seq = seq
        return work

    # -- non-blocking ---------------------------------------------------------------------------
    def iallreduce(self, buf: np.ndarray, op: str = "sum", *, describe: str | None = None) -> Work:
        """Start reducing ``buf`` across ranks, in place; ``buf`` is not to be touched until done."""
        _check_buffer(buf, "allreduce", reduces=True)
        if op in SUM16_OPS:
            if buf.dtype != SUM16_OPS[op]:
                raise TypeError(
                    f"allreduce op {op!r} takes a {SUM16_OPS[op]} buffer, got {buf.dtype}: "
                    f"sum_fp16 sums float16 arrays, sum_bf16 sums bfloat16 bit patterns held in "
                    f"uint16 (see ddpgrad.distributed.comm.sum16.float_to_bf16_bits)"
                )
        elif op not in REDUCE_OPS:
            raise ValueError(f"allreduce op must be one of {REDUCE_OPS + tuple(SUM16_OPS)}, got {op!r}")
        describe = describe or _describe(f"allreduce({op})", buf)
        seq = self._next_call("allreduce", buf, op)
        host_only = op in SUM16_OPS or buf.dtype == np.float16
        return self._numbered(self._route(buf, lambda b: self._iallreduce(b, op, describe), host_only=host_only), seq)

    def ibroadcast(self, buf: np.ndarray, root: int = 0, *, describe: str | None = None) -> Work:
        """Start copying rank ``root``'s ``buf`` into ``buf`` on every rank."""
        _check_buffer(buf, "broadcast")
        if not 0 <= root < self.size:
            raise ValueError(f"broadcast root must be a rank in [0, {self.size}), got {root}")
        describe = describe or _describe(f"broadcast(root={root})", buf)
        seq = self._next_call("broadcast", buf, root)
        return self._numbered(self._route(buf, lambda b: self._ibroadcast(b, root, describe)), seq)

    def iallgather(self, sendbuf: np.ndarray, *, describe: str | None = None) -> Work:
        """Start gathering every rank's ``sendbuf`` (same shape everywhere) into a new array."""
        _check_buffer(sendbuf, "allgather", writable=False)
        describe = describe or _describe("allgather", sendbuf)
        seq = self._next_call("allgather", sendbuf, 0)
        return self._numbered(self._route(sendbuf, lambda b: self._iallgather(b, describe), in_place=False), seq)

    def ibarrier(self, *, describe: str | None = None) -> Work:
        """Start a barrier: done once every rank has entered it."""
        seq = self._next_call("barrier", None, 0)
        if self._staging is not None:
            self._staging.launch()
        return self._numbered(self._ibarrier(describe or "barrier"), seq)

    # -- blocking -------------------------------------------------------------------------------
    def allreduce(self, buf: np.ndarray, op: str = "sum", *, describe: str | None = None) -> np.ndarray:
        """Reduce ``buf`` across ranks in place ("sum", "max", "min", "prod", or a 16-bit sum
        "sum_fp16"/"sum_bf16", see ``SUM16_OPS``); returns ``buf``."""
        return self.iallreduce(buf, op, describe=describe).wait()

    def broadcast(self, buf: np.ndarray, root: int = 0, *, describe: str | None = None) -> np.ndarray:
        """Overwrite ``buf`` on every rank with rank ``root``'s; returns ``buf``."""
        return self.ibroadcast(buf, root, describe=describe).wait()

    def allgather(self, sendbuf: np.ndarray, *, describe: str | None = None) -> np.ndarray:
        """Every rank's ``sendbuf`` stacked along a new leading axis of length ``size``."""
        return self.iallgather(sendbuf, describe=describe).wait()

    def barrier(self, *, describe: str | None = None):
        """Return once every rank has called ``barrier``."""
        self.ibarrier(describe=describe).wait()

    # -- small picklable metadata (not for the hot path) ----------------------------------------
    def allgather_object(self, obj) -> list:
        """A list of every rank's ``obj``, indexed by rank. Pickles: use for small metadata only."""
        payload = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        lengths = self.allgather(np.array([payload.size], dtype=np.int64), describe="allgather_object (lengths)")
        padded = np.zeros(int(lengths.max()), dtype=np.uint8)
        padded[: payload.size] = payload
        gathered = self.allgather(padded, describe="allgather_object (payload)")
        return [pickle.loads(row[:n].tobytes()) for row, n in zip(gathered, lengths[:, 0])]

    def broadcast_object(self, obj, root: int = 0):
        """Rank ``root``'s ``obj`` on every rank (others may pass None). Pickles: small data only."""
        payload = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.rank == root else None
        length = np.array([0 if payload is None else payload.size], dtype=np.int64)
        self.broadcast(length, root, describe="broadcast_object (length)")
        buf = payload.copy() if payload is not None else np.empty(int(length[0]), dtype=np.uint8)
        self.broadcast(buf, root, describe="broadcast_object (payload)")
        return pickle.loads(buf.tobytes())
