"""``ddpgrad.nn.parallel.DistributedDataParallel``: PyTorch's import path for DDP."""

from ...distributed.ddp import DistributedDataParallel  # noqa: F401

__all__ = ["DistributedDataParallel"]
