"""Gradient bucketing: average parameter gradients across ranks while backward is still running.

Parameters are grouped by dtype into flat buckets, in the order their gradients are expected to
become ready (reverse registration order at first, then the order and times observed in the
first iteration). Each parameter's ``.grad`` is a view into its bucket, so the engine accumulates
straight into the buffer that is communicated. A post-accumulate hook counts down each bucket;
when a bucket's last gradient is final, the communication hook starts its reduction, in bucket
order on every rank (MPI needs collectives in the same order everywhere). A callback at the end
of backward launches the rest (parameters this rank did not use count as zero), waits, and gives
``None`` gradients to parameters that no rank used (as single-process training would).

There is one path: every bucket goes through a communication hook. The default,
``allreduce_hook``, sums the bucket; the reducer folds the division by the world size into the
copy of each gradient into its bucket (hooks marked ``prescaled``), so averaging costs no pass of
its own, and in a world of one the hook is the identity.

Progress: MPICH advances a non-blocking collective only inside MPI calls, so every hook call also
``test()``s the oldest bucket in flight; across nodes the kernel's socket buffers carry a bucket's
bytes between those calls (an optional progress thread measured no faster, see ``comm/mpi.py``).
"""

from __future__ import annotations

import time

import numpy as np

from ..autograd.engine import queue_callback
from ..autograd.function import leaf_node
from ..backend import array_module
from ..tensor import Tensor
from .algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from .comm import CollectiveMismatch

MIB = 1024 * 1024

DEFAULT_BUCKET_CAP_MB = 25.0
"""MiB. PyTorch DDP's default: large enough that per-message latency is negligible. After the first
iteration buckets are also split where gradients become ready far apart (``READY_GAP_S``)."""

FIRST_BUCKET_CAP_MB = 1.0
"""MiB. The first bucket (the last layers' gradients, ready first) is small, so communication
starts as early as possible in backward."""

READY_GAP_S = 1e-3
"""After the first iteration a bucket is closed where the next gradient became ready this much
later than the previous one: waiting for it would leave the network idle while backward computes.
1 ms is about 15 per-message latencies of TCP between nodes and 30 of shared memory, so the
extra messages cost little; measured on the 784-1024-1024-10 MLP (benchmarks/README.md)."""


FINGERPRINT_FIELDS = ("step", "collectives started", "bucket layout")
FINGERPRINT_MODULUS = 1 << 16
"""Fingerprint values are taken modulo 2**16: size * sum(f**2) <= size**2 * 2**32 stays exact in
int64 for any world size up to 2**15."""


class Bucket:
    """A flat buffer holding the gradients of some parameters of one dtype."""

    __slots__ = ("index", "buffer", "members", "pending", "work", "describe_prefix")

    def __init__(self, index, buffer, members, describe_prefix):
        self.index = index
        self.buffer = buffer
        self.members = members  # parameter indices
        self.pending = len(members)
        self.work = None
        self.describe_prefix = describe_prefix


class Reducer:
    """Averages the gradients of ``named_params`` over ``comm`` during backward (see module doc)."""

    def __init__(self, named_params, comm, bucket_cap_mb=DEFAULT_BUCKET_CAP_MB,
                 first_bucket_cap_mb=FIRST_BUCKET_CAP_MB, timeline=None, check_finite=False):
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be a positive number of MiB, got {bucket_cap_mb!r}")
        self.names = [n for n, p in named_params if p.requires_grad]
        self.params = [p for _, p in named_params if p.requires_grad]
        self.comm = comm
        self.bucket_cap = int(bucket_cap_mb * MIB)
        self.first_bucket_cap = int(min(first_bucket_cap_mb, bucket_cap_mb) * MIB)
        self.timeline = timeline
        self.check_finite = check_finite  # DDPGRAD_DEBUG: name the first non-finite local gradient
        self._first_nonfinite = -1
        self.step = 0
        self.comm_wait_s = 0.0  # time spent at the end of backward waiting for the reductions
        self.sync = True
        self.comm_hook = allreduce_hook
        self.comm_hook_state = None
        self._scale = 1.0 / comm.size
        self._in_backward = False
        self._next = 0
        self._oldest = 0
        self._used = np.zeros(len(self.params), dtype=np.int64)
        self._ready_at = [None] * len(self.params)
        self._rebuilt = False
        self.buckets = []
        self._build(list(reversed(range(len(self.params)))), [])
        self._hooks = [p.register_post_accumulate_grad_hook(self._hook(i)) for i, p in enumerate(self.params)]
        self._nodes = [leaf_node(p) for p in self.params]
        self._armed = np.zeros(len(self.params), dtype=bool)

    def set_comm_hook(self, state, hook):
        """Let ``hook(state, bucket)`` communicate each bucket (see ``GradBucket``)."""
        self.comm_hook, self.comm_hook_state = hook, state
        self.set_divisor(self.comm.size)

    def set_divisor(self, ranks):
        """Average over ``ranks`` contributions (the world size, or the ranks still training
        inside ``join()``); only a ``prescaled`` hook's buckets are divided by the reducer."""
        self._scale = 1.0 / ranks if getattr(self.comm_hook, "prescaled", False) else None

    def _factor(self):
        """What this pass multiplies local gradients by as they enter their buckets: 1/ranks when
        it synchronises through a ``prescaled`` hook (None when there is nothing to multiply)."""
        return self._scale if self.sync and self._scale not in (None, 1.0) else None

    # ------------------------------------------------------------------ layout
    def _build(self, order, breaks):
        """(Re)build buckets for parameters in ``order``, closing one before each index in
        ``breaks`` and wherever a cap is reached; current gradients move into the views."""
        breaks = set(breaks)
        open_by_dtype, groups, cap = {}, [], self.first_bucket_cap
        for i in order:
            dtype, nbytes = self.params[i]._data.dtype, self.params[i]._data.nbytes
            current = open_by_dtype.get(dtype)
            if current is not None and (i in breaks or current[1] + nbytes > cap):
                cap = self.bucket_cap
                current = None
            if current is None:
                current = open_by_dtype[dtype] = [[], 0]
                groups.append(current[0])
            current[0].append(i)
            current[1] += nbytes

        self.buckets = []
        self._bucket_of = [0] * len(self.params)
        self._views = [None] * len(self.params)
        self._grad_tensors = [None] * len(self.params)
        for b, members in enumerate(groups):
            first = self.params[members[0]]._data
            buffer = array_module(first).zeros(sum(self.params[i]._data.size for i in members), dtype=first.dtype)
            offset = 0
            for i in members:
                p = self.params[i]
                n = p._data.size
                view = buffer[offset:offset + n].reshape(p._data.shape)
                offset += n
                self._views[i] = view
                self._grad_tensors[i] = Tensor._make(view)
                if p.grad is not None:
                    view[...] = p.grad._data
                    p.grad = self._grad_tensors[i]
                self._bucket_of[i] = b
            prefix = (f"allreduce of bucket {b} ({buffer.nbytes / MIB:.2f} MiB {buffer.dtype}, "
                      f"{len(members)} params from {self.names[members[0]]})")
            self.buckets.append(Bucket(b, buffer, members, prefix))
        self._order = list(order)

    def layout(self):
        """Human-readable bucket layout (logged once under DDPGRAD_DEBUG=1)."""
        return "\n".join(
            f"bucket {b.index}: {b.buffer.nbytes / MIB:.3f} MiB {b.buffer.dtype}: "
            + ", ".join(self.names[i] for i in b.members)
            for b in self.buckets
        )

    # ------------------------------------------------------------------ per iteration
    def prepare(self, sync: bool):
        """Before a forward pass: gradients that exist move into their bucket views.

        A ``None`` gradient stays ``None``: its first contribution in backward is copied into the
        view by the hook (one copy, scaled there by 1/world size, instead of zero-filling the view
        and adding to it). A previous backward that raised is dealt with here (``_recover``).
        """
        if self._in_backward:
            self._recover()
        self.sync = sync
        params, views, tensors, nodes = self.params, self._views, self._grad_tensors, self._nodes
        scale = self._factor() or 1.0
        for i, p in enumerate(params):
            g = p.grad
            if g is None:  # an op may write the first contribution straight into the view
                nodes[i].destination = (views[i], tensors[i], scale)
                self._armed[i] = True
            elif g._data is not views[i]:
                views[i][...] = g._data
                p.grad = tensors[i]

    def _recover(self):
        """The last backward raised before its end: reset if no bucket went out, else refuse."""
        launched = [b.index for b in self.buckets if b.work is not None]
        if launched and self.comm.size > 1:
            raise RuntimeError(
                f"DistributedDataParallel: the previous backward pass on rank {self.comm.rank} "
                f"raised after bucket(s) {launched} had started their reduction at step "
                f"{self.step}, so this rank's collectives are out of step with the other ranks' and "
                f"the replicas can not be kept identical. Let the exception end the job (or catch it "
                f"only before calling backward)."
            )
        self._reset_iteration()

    def _reset_iteration(self):
        self._in_backward = False
        for i in np.flatnonzero(self._armed):
            self._nodes[i].destination = None
        self._armed[:] = False
        for bucket in self.buckets:
            bucket.pending = len(bucket.members)
            bucket.work = None
        self._next = self._oldest = 0
        self._used[:] = 0

    def _hook(self, i):
        def on_grad_ready(param):
            self._on_ready(i, param)

        return on_grad_ready

    def _on_ready(self, i, param):
        view = self._views[i]
        sync = self.sync
        written = False
        if self._armed[i]:
            self._armed[i] = False
            self._nodes[i].destination = None
            written = param.grad is self._grad_tensors[i]  # the op wrote it into the view, scaled
        if not written:
            factor = self._factor()
            if param.grad._data is not view:  # first contribution: copy it in, scaled when averaging
                if factor is None:
                    view[...] = param.grad._data
                else:
                    array_module(view).multiply(param.grad._data, factor, out=view)
                param.grad = self._grad_tensors[i]
            elif factor is not None:
                view *= factor  # the engine added into an accumulated gradient
        if sync:  # only a synchronised pass says which parameters it used
            self._used[i] = 1
        if not self._rebuilt:
            self._ready_at[i] = time.perf_counter()
        if self.check_finite and self._first_nonfinite < 0 and not bool(array_module(view).isfinite(view).all()):
            self._first_nonfinite = i
        if not sync:
            return
        if not self._in_backward:
            self._in_backward = True
            queue_callback(self._finalize)
            if self.timeline is not None:
                self.timeline.begin("backward", "backward (from the first gradient)")
        bucket = self.buckets[self._bucket_of[i]]
        bucket.pending -= 1
        if bucket.pending == 0:
            if self.timeline is not None:
                self.timeline.instant(f"bucket {bucket.index} ready", "reducer")
            if bucket.index == self._next:
                self._launch_ready()
                return
        if self._oldest < self._next:
            self._progress()

    def _launch_ready(self):
        buckets = self.buckets
        while self._next < len(buckets) and buckets[self._next].pending == 0:
            self._launch(buckets[self._next])
            self._next += 1

    def _launch(self, bucket):
        describe = f"{bucket.describe_prefix} at step {self.step}"
        members = [self.params[i] for i in bucket.members]
        grad_bucket = GradBucket(bucket, self.comm, describe, members, bucket.index == len(self.buckets) - 1,
                                 prescaled=self._scale is not None)
        if self.timeline is not None:
            self.timeline.begin(bucket.index, f"bucket {bucket.index} in flight",
                                {"MiB": round(bucket.buffer.nbytes / MIB, 3), "params": len(members)})
        bucket.work = _check_hook_work(self.comm_hook(self.comm_hook_state, grad_bucket), self.comm_hook)

    def _retire(self, bucket):
        if self.timeline is not None:
            self.timeline.end(bucket.index)

    def _progress(self):
        """Let MPI advance the collectives in flight; retire the oldest ones that completed."""
        buckets = self.buckets
        while self._oldest < self._next:
            bucket = buckets[self._oldest]
            if not bucket.work.test():
                return
            self._retire(bucket)
            self._oldest += 1

    def _finalize(self):
        """End of backward: launch what is left, wait, mark globally unused parameters, and check
        that every rank is at the same point (``_check_in_step``)."""
        self._in_backward = False
        try:
            self._reduce_all()
        except BaseException:
            if any(b.work is not None for b in self.buckets):
                self._in_backward = True  # the next forward refuses (``_recover``)
            raise

    def _reduce_all(self):
        timeline = self.timeline
        if timeline is not None:
            timeline.end("backward")
        used = self._used
        if not used.all():
            self._zero_unused()
        for bucket in self.buckets:
            bucket.pending = 0
        self._launch_ready()
        size = self.comm.size
        usage = None
        if size > 1:  # every rank joins: any rank may have a parameter it did not use
            usage = self._usage_message()
            usage_work = self.comm.iallreduce(usage, "sum", describe=f"allreduce of parameter usage at step {self.step}")
        waiting_since = time.perf_counter()
        if timeline is not None:
            timeline.begin("wait", "wait for reductions")
        for bucket in self.buckets:
            result = bucket.work.wait()
            if result is not bucket.buffer:
                bucket.buffer[...] = _check_hook_result(result, bucket, self.comm_hook)
            if bucket.index >= self._oldest:
                self._retire(bucket)
            bucket.work = None
        if usage is not None:
            usage_work.wait()
            used = usage[:len(self.params)]
        if timeline is not None:
            timeline.end("wait")
        self.comm_wait_s += time.perf_counter() - waiting_since
        if not used.all():
            for i in np.flatnonzero(used == 0):
                self.params[i].grad = None
        self._reset_iteration()
        if usage is not None:
            self._check_in_step(usage)
        if not self._rebuilt:
            self._rebuild_from_observed_times()
        self.step += 1
        if timeline is not None:
            timeline.begin("after backward", "after backward: optimizer step, loop")

    # ------------------------------------------------------------------ cross-rank checks
    def _fingerprint(self):
        """What every rank must agree on at the end of a backward: the step, how many collectives
        this communicator has started, and the bucket layout (each modulo 2**16)."""
        layout = sum((k + 1) * (b.buffer.size % 65521) for k, b in enumerate(self.buckets))
        return np.array([self.step, self.comm.calls, layout], dtype=np.int64) % FINGERPRINT_MODULUS

    def _usage_message(self):
        """The usage allreduce's buffer: which parameters this rank used, its fingerprint ``f``
        as ``f`` and ``f**2`` (all ranks agree iff size * sum(f**2) == sum(f)**2), and under
        DDPGRAD_DEBUG the first parameter whose local gradient was not finite, in this rank's slot."""
        f = self._fingerprint()
        parts = [self._used, f, f * f]
        if self.check_finite:
            slots = np.zeros(self.comm.size, dtype=np.int64)
            slots[self.comm.rank] = self._first_nonfinite + 1
            parts.append(slots)
        return np.concatenate(parts)

    def _check_in_step(self, usage):
        n, k, size = len(self.params), len(FINGERPRINT_FIELDS), self.comm.size
        sums, squares = usage[n:n + k], usage[n + k:n + 2 * k]
        if np.any(size * squares != sums * sums):
            everyone = self.comm.allgather(self._fingerprint(), describe="allgather of step fingerprints")
            rows = "; ".join(f"rank {r}: " + ", ".join(f"{name} {v}" for name, v in zip(FINGERPRINT_FIELDS, row))
                             for r, row in enumerate(everyone.tolist()))
            raise CollectiveMismatch(
                f"DistributedDataParallel: the ranks are out of step at the end of backward ({rows}; "
                f"values modulo {FINGERPRINT_MODULUS}). A rank ran another number of steps or "
                f"collectives (uneven data: use ddp.join(); a rank-dependent branch, an evaluation "
                f"all_reduce on some ranks only), so gradients would mix with other data."
            )
        if self.check_finite:
            slots = usage[n + 2 * k:]
            self._first_nonfinite = -1
            bad = np.flatnonzero(slots)
            if bad.size:
                rank = int(bad[0])
                raise FloatingPointError(
                    f"DDPGRAD_DEBUG: at step {self.step} the local gradient of parameter "
                    f"'{self.names[int(slots[rank]) - 1]}' on rank {rank} is not finite (NaN or "
                    f"inf){' (and on ranks ' + str(bad[1:].tolist()) + ')' if bad.size > 1 else ''}; "
                    f"averaging would spread it to every replica. Look at that rank's inputs and "
                    f"learning rate."
                )

    # ------------------------------------------------------------------ join
    def shadow_iteration(self):
        """A rank out of data (inside ``join()``) takes part in one iteration of the others: zero
        gradients through the same collectives, in the same order."""
        if self._in_backward:
            self._recover()
        self.sync = True
        for bucket in self.buckets:
            bucket.buffer.fill(0)
        for i, p in enumerate(self.params):
            p.grad = self._grad_tensors[i]
        self._finalize()

    def _zero_unused(self):
        """Parameters without a gradient this pass contribute zeros; one that has a gradient
        accumulated before (``no_sync`` micro-batches, no ``zero_grad``) but got nothing in this
        pass is scaled like the others and counts as used, so it keeps its gradient."""
        for i in np.flatnonzero(self._used == 0):
            p = self.params[i]
            if p.grad is None:
                self._views[i].fill(0)
                p.grad = self._grad_tensors[i]
            else:
                self._used[i] = 1
                factor = self._factor()
                if factor is not None:
                    self._views[i][...] *= factor

    def _rebuild_from_observed_times(self):
        """After the first iteration: buckets follow the order gradients actually became ready,
        split where one became ready long after the previous one (``READY_GAP_S``). Rank 0's
        observation is used by every rank."""
        self._rebuilt = True
        ready = sorted((t, i) for i, t in enumerate(self._ready_at) if t is not None)
        seen = {i for _, i in ready}
        order = [i for _, i in ready] + [i for i in reversed(range(len(self.params))) if i not in seen]
        gaps = [0] + [int(ready[k][0] - ready[k - 1][0] > READY_GAP_S) for k in range(1, len(ready))]
        plan = np.asarray(order + gaps + [0] * (len(order) - len(gaps)), dtype=np.int64)
        if self.comm.size > 1:
            self.comm.broadcast(plan, 0, describe="broadcast of the observed gradient order")
        n = len(order)
        order = plan[:n].tolist()
        breaks = [i for i, gap in zip(order, plan[n:].tolist()) if gap]
        self._ready_at = [None] * len(self.params)
        if order != self._order or breaks:
            self._build(order, breaks)


class GradBucket:
    """What a communication hook gets: one bucket's flat gradient buffer and its parameters.

    The hook (``DistributedDataParallel.register_comm_hook``) starts the bucket's communication
    on ``comm`` (naming it ``describe`` for timeout messages) and returns a handle with
    ``test() -> bool`` and ``wait() -> array``; ``wait()`` gives the bucket's gradient averaged
    over the ranks, of the buffer's shape (the reducer copies it into the buffer unless it is the
    buffer itself). A hook with the attribute ``prescaled = True`` gets buckets already divided
    by the world size (``is_prescaled()``); any other hook gets the local gradient.
    """

    def __init__(self, bucket, comm, describe, params=(), last=False, prescaled=False):
        self._bucket = bucket
        self._params = params
        self._last = last
        self._prescaled = prescaled
        self.comm = comm
        self.describe = describe

    def index(self):
        return self._bucket.index

    def buffer(self):
        """The flat gradient array (NumPy or CuPy) of this bucket, not yet summed over ranks."""
        return self._bucket.buffer

    def parameters(self):
        """The parameters whose gradients are views into ``buffer()``, in buffer order."""
        return list(self._params)

    def is_last(self):
        """Whether this is the last bucket reduced in an iteration."""
        return self._last

    def is_prescaled(self):
        """Whether ``buffer()`` already holds the local gradient divided by the world size."""
        return self._prescaled


def _check_hook_work(work, hook):
    if not (hasattr(work, "wait") and hasattr(work, "test")):
        raise TypeError(
            f"communication hook {getattr(hook, '__name__', hook)!r} returned {type(work).__name__}, "
            f"not a handle with test() and wait(): return the Work of the collective it started "
            f"(e.g. bucket.comm.iallreduce(...)), or an object wrapping it"
        )
    return work


def _check_hook_result(result, bucket, hook):
    if getattr(result, "shape", None) != bucket.buffer.shape:
        raise RuntimeError(
            f"communication hook {getattr(hook, '__name__', hook)!r}: wait() returned "
            f"{type(result).__name__} of shape {getattr(result, 'shape', None)} for bucket "
            f"{bucket.index}, whose buffer has shape {bucket.buffer.shape}: it must return the "
            f"bucket's averaged gradient, an array of the buffer's shape"
        )
    return result
