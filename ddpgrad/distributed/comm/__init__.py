"""Communicators: how ranks exchange arrays. Backends: ``mpi``, ``local`` (one process), ``threads``.

``make_communicator()`` picks one; the launcher is recognised from its environment variables, so
choosing never imports mpi4py (and never initialises MPI) unless MPI is what runs the job.
"""

from __future__ import annotations

import importlib.util

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
from ...launch.environment import LaunchError, announced, launcher_world_size, local_rank

BACKENDS = ("auto", "mpi", "local", "threads")


def make_communicator(backend: str = "auto", timeout: float | None = None) -> Communicator:
    """A communicator for this process.

    "auto": the ``launch_threads`` rank's communicator inside one; "mpi" when the environment
    announces more than one rank; else "local". "threads" works only inside ``launch_threads``.
    With MPI, every world size and rank the environment announces must match MPI's (raises
    ``LaunchError`` otherwise): a process started as one of N never trains alone.
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
        launch = announced()
        ranks = launch.world_size
        if ranks < 2:
            return LocalCommunicator(timeout)
        if launch.torchrun_only:
            raise LaunchError(launch.torchrun_error())
        if importlib.util.find_spec("mpi4py") is None:
            raise ImportError(
                f"this process was started by an MPI launcher with {ranks} ranks, but mpi4py is not "
                f'installed, so it would train alone: pip install "ddpgrad[mpi]"'
            )
        backend = "mpi"
    if backend == "local":
        return LocalCommunicator(timeout)
    from .mpi import MPICommunicator, mpi_module  # noqa: PLC0415 - keeps mpi4py out of non-MPI runs

    comm = MPICommunicator(timeout=timeout)
    library = " ".join(mpi_module().Get_library_version().split("\n", 1)[0].split())  # "MPICH Version: 5.0.2"
    problem = announced().mismatch(comm.size, comm.rank, library)
    if problem:
        raise LaunchError(problem)
    return comm


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CollectiveMismatch",
    "CollectiveTimeout",
    "Communicator",
    "LaunchError",
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
