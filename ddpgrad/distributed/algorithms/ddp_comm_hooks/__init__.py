"""Communication hooks for ``DistributedDataParallel.register_comm_hook(state, hook)``.

    from ddpgrad.distributed.algorithms.ddp_comm_hooks import default_hooks
    model.register_comm_hook(None, default_hooks.fp16_compress_hook)  # half the bytes on the wire
"""

from . import default_hooks
from .default_hooks import allreduce_hook, bf16_compress_hook, fp16_compress_hook

__all__ = ["allreduce_hook", "bf16_compress_hook", "default_hooks", "fp16_compress_hook"]
