"""``DistributedSampler``: each rank's share of a dataset's indices."""

from __future__ import annotations

import math

import numpy as np

from .sampler import Sampler


class DistributedSampler(Sampler):
    """Split a dataset's indices across ranks, as PyTorch does.

    Every epoch the indices are shuffled with seed ``seed + epoch`` (call ``set_epoch``), then rank
    ``r`` takes positions ``r, r + N, r + 2N, ...``. In training mode (``pad=True``) the list is
    padded by repeating its start (or cut, with ``drop_last``) so that every rank gets the same
    number of samples and runs the same number of steps. With ``pad=False`` (evaluation) shards
    are uneven and every sample is seen exactly once across ranks.

    The rank-r shard of a global batch of N*B consecutive shuffled indices is exactly what a
    single process would take as that global batch, so N ranks with batch B follow the same
    optimisation path as one process with batch N*B.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False,
                 pad=True):
        if num_replicas is None or rank is None:
            from ...distributed import get_rank, get_world_size, is_initialized

            if not is_initialized():
                num_replicas = 1 if num_replicas is None else num_replicas
                rank = 0 if rank is None else rank
            else:
                num_replicas = get_world_size() if num_replicas is None else num_replicas
                rank = get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.pad = pad
        self.epoch = 0
        n = len(dataset)
        if not pad:
            self.num_samples = len(range(rank, n, num_replicas))
            self.total_size = n
        elif drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
            self.total_size = self.num_samples * num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
            self.total_size = self.num_samples * num_replicas

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 array."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.Generator(np.random.PCG64(self.seed + self.epoch)).permutation(n)
        else:
            order = np.arange(n)
        if self.pad:
            if self.total_size > n:
                order = np.resize(order, self.total_size)  # repeats from the start, as PyTorch
            else:
                order = order[: self.total_size]
        return order[self.rank::self.num_replicas].astype(np.int64)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch: int):
        """Reshuffle for ``epoch``: call it at the start of each epoch on every rank."""
        self.epoch = int(epoch)
