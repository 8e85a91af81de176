"""Datasets, samplers and the DataLoader (``ddpgrad.utils.data``)."""

from .dataloader import DataLoader, default_collate, default_convert  # noqa: F401
from .distributed import DistributedSampler  # noqa: F401
from .dataset import Dataset, IterableDataset, Subset, TensorDataset, random_split  # noqa: F401
from .sampler import (  # noqa: F401
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
)
