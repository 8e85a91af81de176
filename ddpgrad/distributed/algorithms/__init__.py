"""``ddpgrad.distributed.algorithms``: ways to change how DDP communicates (PyTorch's layout).

``ddp_comm_hooks.default_hooks`` holds the built-in communication hooks for
``DistributedDataParallel.register_comm_hook``: plain averaging and fp16/bf16 gradient compression. ``Join`` trains on uneven inputs.
"""

from .join import Join

__all__ = ["Join"]
