"""Communicators: how ranks exchange arrays. Backends: ``mpi``, ``local`` (one process), ``threads``.

``make_communicator()`` picks one; the launcher is recognised from its environment variables, so
choosing never imports mpi4py (and never initialises MPI) unless MPI is what runs the job.
"""

from __future__ import annotations

import importlib.util
import os

from .base import (
    DEFAULT_TIMEOUT_S,
    CollectiveMismatch,
    CollectiveTimeout,
    Communicator,
    Work,
    on_timeout,
    resolve_timeout,
)
from .local import LocalCommunicator
from .threads import RankFailed, ThreadsCommunicator, ThreadWorld, current_thread_communicator, launch_threads

WORLD_SIZE_ENV = (
    "PMI_SIZE",  # MPICH's Hydra mpiexec, Intel MPI, Slurm's srun --mpi=pmi2
    "OMPI_COMM_WORLD_SIZE",  # Open MPI's mpirun
    "MV2_COMM_WORLD_SIZE",  # MVAPICH2
    "MPI_LOCALNRANKS",  # Hydra: ranks on this node (a lower bound on the world size)
)
LOCAL_RANK_ENV = (
    "MPI_LOCALRANKID",  # MPICH's Hydra, Intel MPI
    "OMPI_COMM_WORLD_LOCAL_RANK",  # Open MPI
    "MV2_COMM_WORLD_LOCAL_RANK",  # MVAPICH2
    "SLURM_LOCALID",  # srun
)
BACKENDS = ("auto", "mpi", "local", "threads")


def launcher_world_size(environ=None) -> int:
    """How many ranks the MPI launcher that started this process says there are (1 if none)."""
    environ = os.environ if environ is None else environ
    return max((int(environ[name]) for name in WORLD_SIZE_ENV if environ.get(name, "").isdigit()), default=1)


def local_rank(environ=None) -> int:
    """This rank's index among the ranks on its node (0 without a launcher): picks its GPU."""
    environ = os.environ if environ is None else environ
    for name in LOCAL_RANK_ENV:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return 0


def make_communicator(backend: str = "auto", timeout: float | None = None) -> Communicator:
    """A communicator for this process.

    "auto": the ``launch_threads`` rank's communicator inside one; "mpi" when an MPI launcher
    started more than one rank; else "local". "threads" works only inside ``launch_threads``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    thread_comm = current_thread_communicator()
    if backend == "threads" or (backend == "auto" and thread_comm is not None):
        if thread_comm is None:
            raise RuntimeError('backend "threads" needs ranks started by launch_threads(fn, world_size)')
        if timeout is not None:
            thread_comm.timeout = resolve_timeout(timeout)
        return thread_comm
    if backend == "auto":
        ranks = launcher_world_size()
        if ranks < 2:
            return LocalCommunicator(timeout)
        if importlib.util.find_spec("mpi4py") is None:
            raise ImportError(
                f"this process was started by an MPI launcher with {ranks} ranks, but mpi4py is not "
                f'installed, so it would train alone: pip install "ddpgrad[mpi]"'
            )
        backend = "mpi"
    if backend == "local":
        return LocalCommunicator(timeout)
    from .mpi import MPICommunicator  # noqa: PLC0415 - keeps mpi4py out of non-MPI runs

    return MPICommunicator(timeout=timeout)


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CollectiveMismatch",
    "CollectiveTimeout",
    "Communicator",
    "LocalCommunicator",
    "RankFailed",
    "ThreadWorld",
    "ThreadsCommunicator",
    "Work",
    "current_thread_communicator",
    "launch_threads",
    "launcher_world_size",
    "local_rank",
    "make_communicator",
    "on_timeout",
    "resolve_timeout",
]
