"""Gradient bucketing: average parameter gradients across ranks while backward is still running.

Parameters are grouped by dtype into flat buckets, in the order their gradients are expected to
become ready (reverse registration order at first, then the order observed in the first
iteration). Each parameter's ``.grad`` is a view into its bucket, so the engine accumulates
straight into the buffer that MPI reduces: no copies. A post-accumulate hook counts down each
bucket; when a bucket's last gradient is final its non-blocking allreduce starts, in bucket order
on every rank (MPI needs collectives in the same order everywhere). A callback at the end of
backward launches the rest (parameters this rank did not use count as zero), waits, divides by the
world size, and gives ``None`` gradients to parameters that no rank used (as single-process
training would).

Progress: MPICH advances a non-blocking collective only inside MPI calls, so every hook call also
``test()``s the oldest bucket in flight. That costs one cheap MPI call per parameter; see
README.md ("Performance") for why this beats a communication thread here.
"""

from __future__ import annotations

import time

import numpy as np

from ..autograd.engine import queue_callback
from ..backend import array_module
from ..tensor import Tensor
from .staging import StagedAllreduce, needs_staging, pinned_like, start_allreduce

DEFAULT_BUCKET_CAP_MB = 25.0
"""PyTorch DDP's default: large enough that per-message latency is negligible."""

FIRST_BUCKET_CAP_MB = 1.0
"""The first bucket (the last layers' gradients, ready first) is small, so communication starts
as early as possible in backward."""

_MB = 1024 * 1024


class Bucket:
    """A flat buffer holding the gradients of some parameters of one dtype."""

    __slots__ = ("index", "buffer", "host", "members", "pending", "work", "describe_prefix")

    def __init__(self, index, buffer, members, describe_prefix, host=None):
        self.index = index
        self.buffer = buffer
        self.host = host  # pinned host copy of a GPU buffer when MPI can not read device memory
        self.members = members  # parameter indices
        self.pending = len(members)
        self.work = None
        self.describe_prefix = describe_prefix


class Reducer:
    """Averages the gradients of ``named_params`` over ``comm`` during backward (see module doc)."""

    def __init__(self, named_params, comm, bucket_cap_mb=DEFAULT_BUCKET_CAP_MB,
                 first_bucket_cap_mb=FIRST_BUCKET_CAP_MB):
        self.names = [n for n, p in named_params if p.requires_grad]
        self.params = [p for _, p in named_params if p.requires_grad]
        self.comm = comm
        self.bucket_cap = int(bucket_cap_mb * _MB)
        self.first_bucket_cap = int(min(first_bucket_cap_mb, bucket_cap_mb) * _MB)
        self.step = 0
        self.comm_wait_s = 0.0  # time spent at the end of backward waiting for the reductions
        self.sync = True
        self.comm_hook = None
        self.comm_hook_state = None
        self._in_backward = False
        self._next = 0
        self._oldest = 0
        self._used = np.zeros(len(self.params), dtype=np.int32)
        self._ready_order = []
        self._rebuilt = False
        self._order = list(reversed(range(len(self.params))))
        self.buckets = []
        self._build(self._order)
        self._hooks = [p.register_post_accumulate_grad_hook(self._hook(i)) for i, p in enumerate(self.params)]

    # ------------------------------------------------------------------ layout
    def _build(self, order):
        """(Re)build buckets for parameters in ``order``; current gradients move into the views."""
        by_dtype = {}
        for i in order:
            by_dtype.setdefault(self.params[i]._data.dtype, []).append(i)
        groups, cap = [], self.first_bucket_cap
        for members in by_dtype.values():
            current, size = [], 0
            for i in members:
                nbytes = self.params[i]._data.nbytes
                if current and size + nbytes > cap:
                    groups.append(current)
                    current, size, cap = [], 0, self.bucket_cap
                current.append(i)
                size += nbytes
            if current:
                groups.append(current)
                cap = self.bucket_cap
        position = {i: k for k, i in enumerate(order)}
        groups.sort(key=lambda g: position[g[0]])

        self.buckets = []
        self._bucket_of = [0] * len(self.params)
        self._views = [None] * len(self.params)
        self._grad_tensors = [None] * len(self.params)
        for b, members in enumerate(groups):
            first = self.params[members[0]]._data
            xp = array_module(first)
            total = sum(self.params[i]._data.size for i in members)
            buffer = xp.zeros(total, dtype=first.dtype)
            offset = 0
            for i in members:
                p = self.params[i]
                n = p._data.size
                view = buffer[offset:offset + n].reshape(p._data.shape)
                offset += n
                if p.grad is not None:
                    view[...] = p.grad._data
                self._views[i] = view
                self._grad_tensors[i] = Tensor._make(view)
                if p.grad is not None:
                    p.grad = self._grad_tensors[i]
                self._bucket_of[i] = b
            prefix = (f"allreduce of bucket {b} ({buffer.nbytes / 1e6:.2f} MB {buffer.dtype}, "
                      f"{len(members)} params from {self.names[members[0]]})")
            host = pinned_like(buffer) if needs_staging(buffer, self.comm) else None
            self.buckets.append(Bucket(b, buffer, members, prefix, host))
        self._order = list(order)

    def layout(self):
        """Human-readable bucket layout (logged once under DDPGRAD_DEBUG=1)."""
        lines = []
        for b in self.buckets:
            names = ", ".join(self.names[i] for i in b.members)
            lines.append(f"bucket {b.index}: {b.buffer.nbytes / 1e6:.3f} MB {b.buffer.dtype}: {names}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ per iteration
    def prepare(self, sync: bool):
        """Before a forward pass: gradients that exist move into their bucket views.

        A ``None`` gradient stays ``None``: its first contribution in backward is copied into the
        view by the hook (one copy, instead of zero-filling the view and adding to it).
        """
        self.sync = sync
        params, views, tensors = self.params, self._views, self._grad_tensors
        for i, p in enumerate(params):
            g = p.grad
            if g is not None and g._data is not views[i]:
                views[i][...] = g._data
                p.grad = tensors[i]

    def _zero_missing(self):
        """Parameters with no gradient this pass contribute zeros from their views."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                self._views[i].fill(0)
                p.grad = self._grad_tensors[i]

    def _hook(self, i):
        def on_grad_ready(param):
            self._on_ready(i, param)

        return on_grad_ready

    def _on_ready(self, i, param):
        if param.grad._data is not self._views[i]:  # .grad was set to None after forward
            self._views[i][...] = param.grad._data
            param.grad = self._grad_tensors[i]
        self._used[i] = 1
        if not self._rebuilt:
            self._ready_order.append(i)
        if not self.sync:
            return
        if not self._in_backward:
            self._in_backward = True
            queue_callback(self._finalize)
        bucket = self.buckets[self._bucket_of[i]]
        bucket.pending -= 1
        if bucket.pending == 0 and bucket.index == self._next:
            self._launch_ready()
        elif self._oldest < self._next:
            self._progress()

    def _launch_ready(self):
        buckets = self.buckets
        while self._next < len(buckets) and buckets[self._next].pending == 0:
            self._launch(buckets[self._next])
            self._next += 1

    def _launch(self, bucket):
        describe = f"{bucket.describe_prefix} at step {self.step}"
        if self.comm.size == 1 and self.comm_hook is None:
            bucket.work = None
        elif self.comm_hook is not None:
            grad_bucket = GradBucket(bucket, self.comm, describe, [self.params[i] for i in bucket.members],
                                     bucket.index == len(self.buckets) - 1)
            bucket.work = _check_hook_work(self.comm_hook(self.comm_hook_state, grad_bucket), self.comm_hook)
        else:
            bucket.work = start_allreduce(self.comm, bucket.buffer, bucket.host, describe)

    def _progress(self):
        """Let MPI advance the collectives in flight; retire the oldest ones that completed."""
        buckets = self.buckets
        while self._oldest < self._next:
            work = buckets[self._oldest].work
            if work is not None and not work.test():
                return
            self._oldest += 1

    def _finalize(self):
        """End of backward: launch what is left, wait, average, mark globally unused parameters."""
        self._in_backward = False
        if not self._used.all():
            self._zero_missing()
        for bucket in self.buckets:
            bucket.pending = 0
        self._launch_ready()
        for bucket in self.buckets:
            if isinstance(bucket.work, StagedAllreduce):
                bucket.work.start()  # every bucket's collective is issued before the usage one
        size = self.comm.size
        used = self._used
        usage = None
        if size > 1:  # every rank joins: any rank may have a parameter it did not use
            used = used.copy()
            usage = self.comm.iallreduce(used, "sum", describe=f"allreduce of parameter usage at step {self.step}")
        waiting_since = time.perf_counter()
        for bucket in self.buckets:
            if bucket.work is None:
                continue
            result = bucket.work.wait()
            if self.comm_hook is not None:
                if result is not bucket.buffer:
                    bucket.buffer[...] = _check_hook_result(result, bucket, self.comm_hook)
            else:
                array_module(bucket.buffer).divide(bucket.buffer, size, out=bucket.buffer)
            bucket.work = None
        if usage is not None:
            usage.wait()
        self.comm_wait_s += time.perf_counter() - waiting_since
        if not used.all():
            for i in np.flatnonzero(used == 0):
                self.params[i].grad = None
        for bucket in self.buckets:
            bucket.pending = len(bucket.members)
        self._next = self._oldest = 0
        self._used[:] = 0
        if not self._rebuilt:
            self._rebuild_from_observed_order()
        self.step += 1

    def _rebuild_from_observed_order(self):
        """After the first iteration: buckets follow the order gradients actually became ready."""
        self._rebuilt = True
        seen = dict.fromkeys(self._ready_order)
        order = list(seen) + [i for i in reversed(range(len(self.params))) if i not in seen]
        order = np.asarray(order, dtype=np.int64)
        if self.comm.size > 1:
            self.comm.broadcast(order, 0, describe="broadcast of the observed gradient order")
        order = order.tolist()
        self._ready_order = []
        if order != self._order:
            self._build(order)


class GradBucket:
    """What a communication hook gets: one bucket's flat gradient buffer and its parameters.

    The hook (``DistributedDataParallel.register_comm_hook``) starts the bucket's communication
    on ``comm`` (naming it ``describe`` for timeout messages) and returns a handle with
    ``test() -> bool`` and ``wait() -> array``; ``wait()`` gives the bucket's gradient averaged
    over the ranks, of the buffer's shape (the reducer copies it into the buffer unless it is the
    buffer itself, and does not divide by the world size).
    """

    def __init__(self, bucket, comm, describe, params=(), last=False):
        self._bucket = bucket
        self._params = params
        self._last = last
        self.comm = comm
        self.describe = describe

    def index(self):
        return self._bucket.index

    def buffer(self):
        """The flat gradient array (NumPy or CuPy) of this bucket, summed over nothing yet."""
        return self._bucket.buffer

    def parameters(self):
        """The parameters whose gradients are views into ``buffer()``, in buffer order."""
        return list(self._params)

    def is_last(self):
        """Whether this is the last bucket reduced in an iteration."""
        return self._last


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
