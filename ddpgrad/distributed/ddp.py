"""``DistributedDataParallel``: one model replica per rank, gradients averaged during backward."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys

import numpy as np

from ..backend import CPU, array_module, to_device
from ..nn.module import Module
from .process_group import get_comm
from .reducer import DEFAULT_BUCKET_CAP_MB, FIRST_BUCKET_CAP_MB, Reducer
from .timeline import timeline_from

DEBUG_ENV = "DDPGRAD_DEBUG"


class DistributedDataParallel(Module):
    """Wrap ``module`` so that ``loss.backward()`` leaves the global mean gradient on every rank.

    At construction every rank checks that all ranks hold the same parameters and buffers (names,
    shapes, dtypes, ``requires_grad``) and copies rank 0's parameters and buffers. Gradients are
    bucketed (``bucket_cap_mb`` in MiB) and reduced while backward runs; parameters a rank did not
    use count as zero there, found automatically. ``no_sync()`` accumulates gradients locally over
    several micro-batches; ``join()`` trains on uneven inputs. ``timeline=path`` (or
    ``$DDPGRAD_TIMELINE``) writes a per-rank trace of each step (see ``timeline``).
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False,
                 gradient_as_bucket_view=True, static_graph=False, timeline=None):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps an nn.Module, got {type(module).__name__}")
        self.module = module
        self.comm = process_group or get_comm()
        self.broadcast_buffers = broadcast_buffers
        self.require_backward_grad_sync = True
        self._hook_registered = False
        self._join = None  # the JoinState while inside join()
        self._debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
        named = list(module.named_parameters())
        if not any(p.requires_grad for _, p in named):
            raise RuntimeError(
                "DistributedDataParallel is not needed when a module doesn't have any parameter "
                "that requires a gradient"
            )
        buffers = list(module.named_buffers())
        self._check_same_model(named, buffers)
        self._sync_from_rank0([p for _, p in named] + [b for _, b in buffers])
        self.timeline = timeline_from(timeline, self.comm.rank)
        self.reducer = Reducer(named, self.comm, DEFAULT_BUCKET_CAP_MB if bucket_cap_mb is None else bucket_cap_mb,
                               FIRST_BUCKET_CAP_MB, timeline=self.timeline, check_finite=self._debug)
        if self._debug and self.comm.rank == 0:
            print(f"[rank 0] DDP bucket layout:\n{self.reducer.layout()}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ construction
    def _check_same_model(self, named, buffers):
        mine = ([("parameter", n, tuple(p.shape), str(p.dtype), bool(p.requires_grad)) for n, p in named]
                + [("buffer", n, tuple(b.shape), str(b.dtype), False) for n, b in buffers])
        everyone = self.comm.allgather_object(mine) if self.comm.size > 1 else [mine]
        reference = everyone[0]
        for rank, theirs in enumerate(everyone[1:], start=1):
            if theirs == reference:
                continue
            for k in range(max(len(reference), len(theirs))):
                a = reference[k] if k < len(reference) else None
                b = theirs[k] if k < len(theirs) else None
                if a != b:
                    raise RuntimeError(
                        f"DistributedDataParallel: the model on rank {rank} differs from rank 0's at "
                        f"entry #{k} of its parameters and buffers: rank 0 has {_describe(a)}, rank "
                        f"{rank} has {_describe(b)}. Every rank must build the same model (same layer "
                        f"sizes, order, dtypes, buffers and requires_grad) before wrapping it."
                    )

    def _sync_from_rank0(self, tensors, root=0):
        """Copy rank ``root``'s parameters and buffers to every rank: one broadcast of the bytes
        of each dtype and device (so bool and int8 buffers travel too)."""
        if self.comm.size == 1 or not tensors:
            return
        groups = {}
        for t in tensors:
            groups.setdefault((t._data.dtype, t.device), []).append(t)
        for (dtype, device), group in groups.items():
            xp = array_module(group[0]._data)
            flat = xp.concatenate([xp.ascontiguousarray(t._data).reshape(-1) for t in group])
            self.comm.broadcast(flat.view(xp.uint8), root,
                                describe=f"broadcast of rank {root}'s {dtype} parameters/buffers on {device}")
            offset = 0
            for t in group:
                n = t._data.size
                t._data[...] = flat[offset:offset + n].reshape(t._data.shape)
                offset += n

    # ------------------------------------------------------------------ running
    def forward(self, *args, **kwargs):
        timeline = self.timeline
        if timeline is not None:
            timeline.end("after backward")
            timeline.begin("forward", "forward")
        if self.training and self._join is not None:
            self._join.notify(self.require_backward_grad_sync)
        self._before_forward_collectives()
        if self.training:
            self.reducer.prepare(self.require_backward_grad_sync)
        out = self.module(*args, **kwargs)
        if timeline is not None:
            timeline.end("forward")
        return out

    def _before_forward_collectives(self):
        """What every forward communicates before running the module (a rank inside ``join()``
        that is out of data does the same): the DDPGRAD_DEBUG replica check, the buffers."""
        if self._debug and self.reducer.step > 0:
            self._check_replicas_identical()
        self._sync_buffers()

    def _sync_buffers(self):
        if self.broadcast_buffers and self.comm.size > 1:
            buffers = [b for _, b in self.module.named_buffers()]
            if buffers:
                self._sync_from_rank0(buffers)

    def join(self, divide_by_initial_world_size=True, enable=True, throw_on_early_termination=False):
        """Train on uneven inputs (PyTorch's ``DDP.join``): a context manager around the training
        loop; a rank out of data shadows the collectives of the ranks still training (its
        gradients count as zero) until every rank is done, then every rank takes the parameters
        of the rank that trained longest. Gradients are divided by the world size the job
        started with (``divide_by_initial_world_size=True``, PyTorch's default) or by the number
        of ranks still training. ``throw_on_early_termination=True`` raises on every rank as
        soon as one runs out instead."""
        from .algorithms.join import Join  # noqa: PLC0415 - join imports this module

        return Join([self], enable=enable, throw_on_early_termination=throw_on_early_termination,
                    divide_by_initial_world_size=divide_by_initial_world_size)

    def join_hook(self, **kwargs):
        """What ``Join`` runs for this model once this rank is out of data."""
        from .algorithms.join import DDPJoinHook  # noqa: PLC0415

        return DDPJoinHook(self, **kwargs)

    @property
    def join_process_group(self):
        return self.comm

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients locally; the next one outside averages the sum."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def register_comm_hook(self, state, hook):
        """Replace the bucket allreduce: ``hook(state, bucket)`` returns a handle whose ``wait()``
        gives the bucket's averaged gradient (see ``ddpgrad.distributed.algorithms``)."""
        if self._hook_registered:
            raise RuntimeError("register_comm_hook can only be called once")
        if not callable(hook):
            raise TypeError(f"register_comm_hook takes a callable hook(state, bucket), got {type(hook).__name__}")
        self._hook_registered = True
        self.reducer.set_comm_hook(state, hook)

    # ------------------------------------------------------------------ DDPGRAD_DEBUG
    def _check_replicas_identical(self):
        digests = [hashlib.blake2b(np.ascontiguousarray(to_device(p._data, CPU)).tobytes(), digest_size=8).hexdigest()
                   for _, p in self.module.named_parameters()]
        everyone = self.comm.allgather_object(digests)
        names = [n for n, _ in self.module.named_parameters()]
        for rank, theirs in enumerate(everyone):
            for name, a, b in zip(names, everyone[0], theirs):
                if a != b:
                    raise RuntimeError(
                        f"DDPGRAD_DEBUG: after step {self.reducer.step} parameter '{name}' on rank "
                        f"{rank} is not bitwise identical to rank 0's: the replicas diverged. Look "
                        f"for rank-dependent updates (an optimizer step on one rank only, a "
                        f"parameter changed outside backward/step, a rank-dependent seed)."
                    )


def _describe(entry):
    if entry is None:
        return "nothing there"
    kind, name, shape, dtype, requires_grad = entry
    grad = f", requires_grad={requires_grad}" if kind == "parameter" else ""
    return f"{kind} '{name}' of shape {list(shape)} and dtype {dtype}{grad}"
