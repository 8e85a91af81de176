"""``DataLoader``: batches of a dataset in sampler order, collated into tensors.

Loading happens in the calling process. With the default collation, a dataset that defines
``__getitems__`` (``TensorDataset``, ``Subset`` of one) is asked for whole batches, so an
array-backed dataset costs one fancy-index per tensor per batch, not a Python loop per sample.
"""

from __future__ import annotations

import collections.abc
import warnings
from itertools import islice

import numpy as np

from ... import backend
from ...ops import stack
from ...tensor import Tensor
from .dataset import IterableDataset
from .sampler import BatchSampler, RandomSampler, SequentialSampler


def default_collate(batch):
    """Merge a list of samples into a batch: tensors/arrays are stacked along a new first
    dimension, numbers become tensors (float64 / int64 / bool), strings stay a list, and
    tuples, lists, named tuples and dicts are collated field by field (a tuple stays a tuple)."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        if any(b.requires_grad for b in batch):
            return stack(batch)
        return Tensor._make(backend.array_module(elem._data).stack([b._data for b in batch]))
    if isinstance(elem, np.ndarray) or backend.is_cuda_array(elem):
        if elem.dtype.kind in "OSUV":
            raise TypeError(f"default_collate: can't collate arrays of dtype {elem.dtype}")
        return Tensor._make(backend.array_module(elem).stack(batch))
    if isinstance(elem, np.generic) and elem.dtype.kind not in "OSUV":
        return Tensor._make(np.asarray(batch))
    if isinstance(elem, bool):
        return Tensor._make(np.asarray(batch, dtype=np.bool_))
    if isinstance(elem, float):
        return Tensor._make(np.asarray(batch, dtype=np.float64))
    if isinstance(elem, int):
        return Tensor._make(np.asarray(batch, dtype=np.int64))
    if isinstance(elem, (str, bytes, np.generic)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {key: default_collate([d[key] for d in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [default_collate(list(field)) for field in zip(*batch)]
        return tuple(fields) if isinstance(elem, tuple) else fields
    raise TypeError(
        f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
        f"found {type(elem).__name__} (pass collate_fn= to batch it yourself)"
    )


def default_convert(data):
    """Turn NumPy arrays and scalars inside ``data`` into tensors (sharing memory); keep the rest."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray) or backend.is_cuda_array(data):
        return data if data.dtype.kind in "OSUV" else Tensor._make(data)
    if isinstance(data, np.generic):
        return data if data.dtype.kind in "OSUV" else Tensor._make(np.asarray(data))
    if isinstance(data, collections.abc.Mapping):
        return {key: default_convert(value) for key, value in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, (tuple, list)):
        return type(data)(default_convert(d) for d in data)
    return data


class DataLoader:
    """Iterate over ``dataset`` in batches, as PyTorch's DataLoader (in the main process).

    ``shuffle=True`` draws a new order every epoch from ``generator`` (or the global generator
    seeded by ``ddpgrad.manual_seed``). ``batch_size=None`` yields single samples. With a
    custom ``collate_fn``, samples are fetched one by one and passed to it as a list.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, generator=None, *, prefetch_factor=None, persistent_workers=False):
        if num_workers < 0:
            raise ValueError(f"num_workers option should be non-negative, got {num_workers}")
        if num_workers > 0:
            warnings.warn(
                f"DataLoader(num_workers={num_workers}): ddpgrad loads batches in the main process, "
                f"so num_workers is ignored (use an array-backed dataset for fast batches)",
                stacklevel=2,
            )
        if isinstance(dataset, IterableDataset) and (shuffle or sampler is not None or batch_sampler is not None):
            raise ValueError("DataLoader with an IterableDataset: shuffle, sampler and batch_sampler are not supported")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
                )
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")

        if sampler is None and not isinstance(dataset, IterableDataset):
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None and sampler is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.generator = generator
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self._custom_collate = collate_fn is not None
        if collate_fn is None:
            batched = self.batch_sampler is not None or batch_size is not None
            collate_fn = default_collate if batched else default_convert
        self.collate_fn = collate_fn

    def __iter__(self):
        if isinstance(self.dataset, IterableDataset):
            return self._iter_stream()
        if self.batch_sampler is None:
            return (self.collate_fn(self.dataset[i]) for i in self.sampler)
        return (self._fetch(indices) for indices in self.batch_sampler)

    def _fetch(self, indices):
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None and not self._custom_collate:
            batch = getitems(indices)
            # a list holds samples (PyTorch's meaning); anything else is a batch already
            return default_collate(batch) if isinstance(batch, list) else default_convert(batch)
        return self.collate_fn([self.dataset[i] for i in indices])

    def _iter_stream(self):
        samples = iter(self.dataset)
        if self.batch_size is None:
            yield from (self.collate_fn(s) for s in samples)
            return
        while batch := list(islice(samples, self.batch_size)):
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield self.collate_fn(batch)

    def __len__(self):
        if isinstance(self.dataset, IterableDataset):
            n = len(self.dataset)
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)
