"""The default process group and PyTorch's collective functions on tensors.

``init_process_group()`` makes the communicator every other call uses. Inside
``launch_threads`` each thread-rank has its own, found without any global state.
"""

from __future__ import annotations

import datetime
import enum


from ..backend import array_module
from ..tensor import Tensor
from .comm import Communicator, current_thread_communicator, make_communicator

_default: Communicator | None = None


class ReduceOp(enum.Enum):
    """Reduction applied by ``all_reduce``: SUM, AVG, MAX, MIN, PRODUCT."""

    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"
    PRODUCT = "prod"


def init_process_group(
    backend: str = "auto",
    timeout: float | datetime.timedelta | None = None,
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> None:
    """Join the job's ranks: "auto" picks MPI under an MPI launcher with >1 rank, else one process.

    ``timeout`` (seconds or a ``timedelta``) bounds every collective wait; default 10 minutes or
    ``$DDPGRAD_TIMEOUT``. Under MPI an uncaught exception on any rank then aborts the whole job.
    Every world size and rank the environment announces (MPI launchers, srun, torchrun) must
    match MPI's, else ``LaunchError`` says how to launch: a process started as one of N never
    trains alone. ``backend="local"`` is a deliberate world of one and checks nothing.
    """
    global _default
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if backend in ("gloo", "nccl"):
        backend = "auto"  # PyTorch scripts name their backend; MPI (or one process) is ours
    thread_comm = current_thread_communicator()
    if thread_comm is not None:
        make_communicator(backend if backend == "threads" else "auto", timeout)
        return
    if _default is not None:
        raise RuntimeError("init_process_group was called twice; call destroy_process_group first")
    comm = make_communicator(backend, timeout)
    if world_size is not None and world_size != comm.size:
        raise ValueError(
            f"init_process_group(world_size={world_size}) but the launcher started {comm.size} "
            f"rank(s): start the job with `mpiexec -n {world_size} ...`"
        )
    if rank is not None and rank != comm.rank:
        raise ValueError(f"init_process_group(rank={rank}) but MPI says this is rank {comm.rank}")
    if comm.backend == "mpi":
        from .comm.mpi import install_abort_on_exception  # noqa: PLC0415 - imports mpi4py

        install_abort_on_exception()
    _default = comm


def is_initialized() -> bool:
    return current_thread_communicator() is not None or _default is not None


def is_available() -> bool:
    return True


def destroy_process_group():
    global _default
    _default = None


def get_comm() -> Communicator:
    """This rank's communicator (raises if ``init_process_group`` was not called)."""
    comm = current_thread_communicator() or _default
    if comm is None:
        raise RuntimeError(
            "Default process group has not been initialized: call "
            "ddpgrad.distributed.init_process_group() first"
        )
    return comm


def get_rank(group=None) -> int:
    return get_comm().rank


def get_world_size(group=None) -> int:
    return get_comm().size


def get_backend(group=None) -> str:
    return get_comm().backend


def barrier(group=None):
    get_comm().barrier()


def _contiguous_array(tensor: Tensor, who: str):
    """The tensor's array as a C-contiguous buffer (NumPy or CuPy: the communicator moves device
    arrays itself), and whether it is a copy to write back."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{who} takes a ddpgrad Tensor, got {type(tensor).__name__}")
    array = tensor._data
    if array.flags.c_contiguous:
        return array, False
    return array_module(array).ascontiguousarray(array), True


def _write_back(tensor: Tensor, buf, copied: bool):
    if copied:
        tensor._data[...] = buf
    tensor._bump()


def all_reduce(tensor: Tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` across ranks, in place (AVG divides the sum by the world size)."""
    comm = get_comm()
    op = ReduceOp(op) if not isinstance(op, ReduceOp) else op
    buf, copied = _contiguous_array(tensor, "all_reduce")
    buf = comm.allreduce(buf, "sum" if op is ReduceOp.AVG else op.value)
    if op is ReduceOp.AVG:
        if buf.dtype.kind == "f":
            buf /= comm.size
        else:
            buf //= comm.size
    _write_back(tensor, buf, copied)
    return _Done() if async_op else None


def broadcast(tensor: Tensor, src=0, group=None, async_op=False):
    """Overwrite ``tensor`` on every rank with rank ``src``'s values, in place."""
    buf, copied = _contiguous_array(tensor, "broadcast")
    get_comm().broadcast(buf, src)
    _write_back(tensor, buf, copied)
    return _Done() if async_op else None


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill ``tensor_list[r]`` with rank r's ``tensor`` (all the same shape and dtype)."""
    comm = get_comm()
    if len(tensor_list) != comm.size:
        raise ValueError(f"all_gather needs a list of {comm.size} tensors (one per rank), got {len(tensor_list)}")
    buf, _ = _contiguous_array(tensor, "all_gather")
    gathered = comm.allgather(buf)
    for out, row in zip(tensor_list, gathered):
        if tuple(out.shape) != row.shape:
            raise ValueError(f"all_gather: output tensor of shape {list(out.shape)} for input of shape {list(row.shape)}")
        out._data[...] = array_module(out._data).asarray(row)
        out._bump()
    return _Done() if async_op else None


def all_gather_object(object_list, obj, group=None):
    """Fill ``object_list`` (length world size) with every rank's picklable ``obj``."""
    gathered = get_comm().allgather_object(obj)
    if len(object_list) != len(gathered):
        raise ValueError(f"all_gather_object needs a list of length {len(gathered)}, got {len(object_list)}")
    object_list[:] = gathered


def broadcast_object_list(object_list, src=0, group=None):
    """Replace ``object_list``'s items on every rank with rank ``src``'s."""
    object_list[:] = get_comm().broadcast_object(list(object_list), src)


class _Done:
    """What ``async_op=True`` returns: the collective already completed."""

    def wait(self, timeout=None):
        return True

    def is_completed(self):
        return True
