"""``ddpgrad.distributed``: process groups, collectives and ``DistributedDataParallel`` over MPI.

Start a job with ``mpiexec -n N python script.py`` (or ``launch/ddprun.py``); without a launcher
the same script runs as a world of one. ``launch_threads(fn, N)`` runs N ranks as threads of one
process, for tests and for stepping through every rank in a debugger.
"""

from __future__ import annotations

from .comm import CollectiveTimeout, launch_threads, local_rank
from .process_group import (
    ReduceOp,
    all_gather,
    all_gather_object,
    all_reduce,
    barrier,
    broadcast,
    broadcast_object_list,
    destroy_process_group,
    get_backend,
    get_comm,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
)


def __getattr__(name):
    # DistributedDataParallel needs nn, which may import this package: resolve it lazily.
    if name == "DistributedDataParallel":
        from .ddp import DistributedDataParallel

        return DistributedDataParallel
    raise AttributeError(f"module 'ddpgrad.distributed' has no attribute {name!r}")


__all__ = [
    "CollectiveTimeout", "DistributedDataParallel", "ReduceOp", "all_gather", "all_gather_object",
    "all_reduce", "barrier", "broadcast", "broadcast_object_list", "destroy_process_group",
    "get_backend", "get_comm", "get_rank", "get_world_size", "init_process_group", "is_available",
    "is_initialized", "launch_threads", "local_rank",
]
