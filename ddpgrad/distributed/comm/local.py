"""A world of one process: every collective is the identity. Never imports MPI."""

from __future__ import annotations

from .base import Communicator, Work


class LocalCommunicator(Communicator):
    """Rank 0 of 1, for single-process runs and debugging; collectives complete at once."""

    backend = "local"

    def __init__(self, timeout: float | None = None):
        super().__init__(rank=0, size=1, timeout=timeout)

    def _iallreduce(self, buf, op, describe):
        return Work(self, "allreduce", describe, result=buf)

    def _ibroadcast(self, buf, root, describe):
        return Work(self, "broadcast", describe, result=buf)

    def _iallgather(self, sendbuf, describe):
        return Work(self, "allgather", describe, result=sendbuf[None].copy())

    def _ibarrier(self, describe):
        return Work(self, "barrier", describe)
