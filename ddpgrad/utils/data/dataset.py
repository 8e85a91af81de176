"""Datasets: indexable collections of samples (``Dataset``) and streams (``IterableDataset``).

A map-style dataset may also define ``__getitems__(indices)``. It returns either a list of
samples (PyTorch's meaning) or a whole batch already collated (a tuple/dict of batched tensors),
which lets ``DataLoader`` fetch a batch with one fancy-index per tensor instead of one
``__getitem__`` per sample. ``TensorDataset`` and ``Subset`` do the latter.
"""

from __future__ import annotations

import math

import numpy as np

from ... import backend
from ... import random as _random
from ...tensor import Tensor


class Dataset:
    """A map-style dataset: subclasses define ``__getitem__(index)`` and usually ``__len__``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class IterableDataset(Dataset):
    """A stream of samples: subclasses define ``__iter__`` (the DataLoader batches it in order)."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class TensorDataset(Dataset):
    """Samples are the rows of tensors (or arrays) sharing their first dimension: ``(x[i], y[i])``."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        sizes = [len(t) for t in tensors]
        if len(set(sizes)) != 1:
            raise ValueError(
                f"Size mismatch between tensors: TensorDataset needs the same first dimension in "
                f"every tensor, got {sizes}"
            )
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices):
        """The batch at ``indices``: one fancy-index per tensor, already collated."""
        return tuple(_take(t, indices) for t in self.tensors)

    def __len__(self):
        return len(self.tensors[0])


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices`` (in that order)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, index):
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    def __getitems__(self, indices):
        inner = [self.indices[i] for i in indices]
        if callable(getattr(self.dataset, "__getitems__", None)):
            return self.dataset.__getitems__(inner)
        return [self.dataset[i] for i in inner]

    def __len__(self):
        return len(self.indices)


def random_split(dataset, lengths, generator=None):
    """Split ``dataset`` into non-overlapping random ``Subset``s of the given lengths.

    ``lengths`` may be fractions summing to 1; the remainder of their rounding goes one sample
    at a time to the first splits, as in PyTorch.
    """
    n = len(dataset)
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        counts = [int(math.floor(n * frac)) for frac in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n:
        raise ValueError(f"Sum of input lengths ({sum(lengths)}) does not equal the length of the input dataset ({n})")
    order = _random.permutation_array(n, generator=generator).tolist()
    splits, start = [], 0
    for length in lengths:
        splits.append(Subset(dataset, order[start:start + length]))
        start += length
    return splits


def _take(t, indices):
    """``t[indices]`` for an index list, as one gather on t's device."""
    if isinstance(t, Tensor):
        if t.requires_grad:
            return t[np.asarray(indices, dtype=np.int64)]
        data = t._data
        return Tensor._make(data[_index_on(data, indices)])
    return t[_index_on(t, indices)]


def _index_on(array, indices):
    idx = np.asarray(indices, dtype=np.int64)
    return backend.array_module(array).asarray(idx) if backend.is_cuda_array(array) else idx
