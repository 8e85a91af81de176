"""Training on uneven inputs: PyTorch's ``Join`` context manager, for ``DistributedDataParallel``.

Inside ``with Join([ddp]):`` (or ``with ddp.join():``) every training forward first takes part in
a small allreduce that counts the ranks still training. A rank that has run out of data leaves
its loop and, in ``__exit__``, answers that allreduce with zero and shadows the rest of each
iteration (the gradient reductions, with zero gradients) until the count is zero: every rank has
finished. Then every rank takes the parameters and buffers of the rank that trained the most
steps, so the replicas end identical.
"""

from __future__ import annotations

import numpy as np



class JoinState:
    """A model's place in a ``Join``: the first model of the context counts, once per iteration,
    the ranks still training and those synchronising gradients; every model divides by it."""

    def __init__(self, ddp, divide_by_initial_world_size, throw_on_early_termination):
        self.ddp = ddp
        self.comm = ddp.comm
        self.divide_by_initial_world_size = divide_by_initial_world_size
        self.throw_on_early_termination = throw_on_early_termination
        self.counter = self  # the JoinState whose model counts (set by Join)
        self.training = self.comm.size
        self.trained = 0  # iterations this rank trained (not shadowed)

    def count(self, training: bool, sync: bool):
        """Allreduce (still training, synchronising), each summed over ranks."""
        message = np.array([int(training), int(training and sync)], dtype=np.int64)
        self.comm.allreduce(message, "sum", describe=f"allreduce of the ranks still training (join) at step "
                                                     f"{self.ddp.reducer.step}")
        self.training = int(message[0])
        return self.training, int(message[1])

    def notify(self, sync: bool):
        """Called by a training forward: count (first model only), then divide accordingly."""
        if self.counter is self:
            self.count(True, sync)
        self.trained += 1
        training = self.counter.training
        if training < self.comm.size:
            self.check_early_termination()
        self.ddp.reducer.set_divisor(self.divisor(training))

    def divisor(self, training):
        return self.comm.size if self.divide_by_initial_world_size else training

    def check_early_termination(self):
        if self.throw_on_early_termination:
            raise RuntimeError(
                f"rank {self.comm.rank}: at least one rank exhausted its inputs "
                f"(join(throw_on_early_termination=True)): raising on every rank"
            )


class DDPJoinHook:
    """What a rank out of data runs for a DDP model: its part of each shadowed iteration, then
    taking the final model."""

    def __init__(self, ddp, divide_by_initial_world_size=True, throw_on_early_termination=False):
        self.ddp = ddp
        self.state = JoinState(ddp, divide_by_initial_world_size, throw_on_early_termination)

    def shadow(self, training, syncing):
        """One iteration of the ranks still training, with zero gradients."""
        ddp = self.ddp
        self.state.check_early_termination()
        ddp._before_forward_collectives()
        if syncing:
            ddp.reducer.set_divisor(self.state.divisor(training))
            ddp.reducer.shadow_iteration()

    def post_hook(self):
        """Every rank takes the parameters and buffers of the rank that trained the most steps."""
        ddp, comm = self.ddp, self.ddp.comm
        mine = np.array([self.state.trained * comm.size + comm.rank], dtype=np.int64)
        comm.allreduce(mine, "max", describe="allreduce of the steps each rank trained (join)")
        ddp.reducer.set_divisor(comm.size)
        tensors = list(ddp.module.parameters()) + list(ddp.module.buffers())
        ddp._sync_from_rank0(tensors, root=int(mine[0]) % comm.size)


class OptimizerJoinHook:
    """An optimizer in a ``Join``: a rank out of data steps it after each shadowed iteration with
    the averaged gradients the others computed, so its parameters and optimizer state stay those
    of the ranks still training."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.state = None

    def shadow(self, training, syncing):
        if syncing:
            self.optimizer.step()

    def post_hook(self):
        pass


class Join:
    """Context manager for uneven inputs (PyTorch's ``torch.distributed.algorithms.Join``).

    ``joinables``: the ``DistributedDataParallel`` models trained in the loop, and (a ddpgrad
    addition) their optimizers: a rank out of data then also steps them with the averaged
    gradients of the iterations it shadows, so its optimizer state stays identical too (it steps
    on every shadowed synchronised iteration: a loop that skips steps, or steps an LR scheduler,
    must do the same on every rank itself). Without them the joined ranks' optimizer state
    misses those steps. ``divide_by_initial_world_size=False`` applies to the built-in hooks; a
    user's communication hook divides as it does. Keyword arguments
    go to each model's join hook: ``divide_by_initial_world_size`` (default True, as PyTorch).
    With ``enable=False`` it does nothing. A rank out of data leaves its loop and waits in
    ``__exit__``, taking part in the others' iterations, until all are done. Only training
    iterations may run inside: evaluation forwards belong outside the ``with``.
    """

    def __init__(self, joinables, enable=True, throw_on_early_termination=False, **kwargs):
        if not joinables:
            raise ValueError("Join needs at least one joinable (a DistributedDataParallel model)")
        models = [j for j in joinables if hasattr(j, "join_hook")]
        optimizers = [j for j in joinables if not hasattr(j, "join_hook")]
        for j in optimizers:
            if not (hasattr(j, "step") and hasattr(j, "param_groups")):
                raise TypeError(f"Join takes DistributedDataParallel models and their optimizers, got {type(j).__name__}")
        if len(models) != 1:
            raise ValueError(
                f"Join takes one DistributedDataParallel model (and its optimizers), got {len(models)}: a "
                f"rank out of data can not know how the others interleave several models' collectives; "
                f"wrap the models in one module and one DistributedDataParallel"
            )
        self.joinables = models
        self.enable = enable
        self.hooks = [j.join_hook(throw_on_early_termination=throw_on_early_termination, **kwargs) for j in models]
        for hook in self.hooks:
            hook.state.counter = self.hooks[0].state
        self.hooks += [OptimizerJoinHook(opt) for opt in optimizers]

    def __enter__(self):
        if self.enable:
            for joinable, hook in zip(self.joinables, self.hooks):
                if joinable._join is not None:
                    raise RuntimeError("this model is already inside a join() context")
                joinable._join = hook.state
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.enable:
            return False
        try:
            if exc_type is not None:
                return False  # an error on this rank ends the job (see comm/mpi.py)
            counter = self.hooks[0].state
            while True:
                training, syncing = counter.count(False, False)
                if training == 0:
                    break
                for hook in self.hooks:
                    hook.shadow(training, syncing)
            for hook in self.hooks:
                hook.post_hook()
        finally:
            for joinable in self.joinables:
                joinable._join = None
        return False


__all__ = ["DDPJoinHook", "Join", "JoinState", "OptimizerJoinHook"]
