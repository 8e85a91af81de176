"""Datasets, samplers and the DataLoader: batching, shuffling, the batched fast path, collation."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

import ddpgrad
from ddpgrad.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    default_collate,
    random_split,
)

N = 10


def _dataset(n=N):
    x = ddpgrad.tensor(np.arange(n * 3, dtype=np.float32).reshape(n, 3))
    y = ddpgrad.tensor(np.arange(n))
    return TensorDataset(x, y)


def _order(loader):
    """The sample indices a loader over ``_dataset`` visited, batch by batch."""
    return [b[1].tolist() for b in loader]


class CountingDataset(TensorDataset):
    def __init__(self, *tensors):
        super().__init__(*tensors)
        self.single = self.batched = 0

    def __getitem__(self, index):
        self.single += 1
        return super().__getitem__(index)

    def __getitems__(self, indices):
        self.batched += 1
        return super().__getitems__(indices)


class PairDataset(Dataset):
    """A plain map-style dataset (no ``__getitems__``): per-sample fetch and collation."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return np.full(2, i, dtype=np.float32), i


# ------------------------------------------------------------------ datasets

def test_tensor_dataset_rows_and_length():
    ds = _dataset()
    assert len(ds) == N
    x, y = ds[4]
    assert x.tolist() == [12.0, 13.0, 14.0] and y.item() == 4


def test_tensor_dataset_rejects_different_first_dimensions():
    with pytest.raises(ValueError, match=r"same first dimension.*\[10, 9\]"):
        TensorDataset(ddpgrad.zeros(10, 2), ddpgrad.zeros(9))


def test_subset_and_random_split_partition_the_dataset():
    ds = _dataset()
    sub = Subset(ds, [7, 2, 5])
    assert len(sub) == 3 and sub[1][1].item() == 2
    parts = random_split(ds, [3, 7], generator=ddpgrad.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [3, 7]
    assert sorted(parts[0].indices + parts[1].indices) == list(range(N))
    again = random_split(ds, [3, 7], generator=ddpgrad.Generator().manual_seed(0))
    assert again[0].indices == parts[0].indices
    assert [len(p) for p in random_split(ds, [0.5, 0.3, 0.2])] == [5, 3, 2]
    assert [len(p) for p in random_split(_dataset(11), [0.5, 0.5])] == [6, 5]
    with pytest.raises(ValueError, match=r"Sum of input lengths \(9\)"):
        random_split(ds, [4, 5])


# ------------------------------------------------------------------ DataLoader batches

def test_batches_in_order_with_a_short_last_batch():
    loader = DataLoader(_dataset(), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 == len(batches)
    assert _order(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    x, y = batches[0]
    assert isinstance(batches[0], tuple)
    assert x.shape == (4, 3) and x.dtype == ddpgrad.float32 and y.dtype == ddpgrad.int64
    np.testing.assert_array_equal(x._data, np.arange(12, dtype=np.float32).reshape(4, 3))


def test_drop_last_drops_the_short_batch():
    loader = DataLoader(_dataset(), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert _order(loader) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_batch_size_none_yields_single_samples():
    loader = DataLoader(PairDataset(), batch_size=None)
    samples = list(loader)
    assert len(loader) == 6 == len(samples)
    x, i = samples[3]
    assert isinstance(x, ddpgrad.Tensor) and x.tolist() == [3.0, 3.0] and i == 3


def test_array_backed_dataset_fetches_whole_batches_without_per_sample_calls():
    ds = CountingDataset(*_dataset().tensors)
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=ddpgrad.Generator().manual_seed(0))
    batches = list(loader)
    assert ds.single == 0 and ds.batched == len(loader) == 3
    for x, y in batches:  # each row still belongs to its label
        np.testing.assert_array_equal(x._data[:, 0], 3 * y._data)


def test_subset_of_array_backed_dataset_keeps_the_fast_path():
    ds = CountingDataset(*_dataset().tensors)
    loader = DataLoader(Subset(ds, [9, 1, 4, 6, 0]), batch_size=2)
    assert _order(loader) == [[9, 1], [4, 6], [0]]
    assert ds.single == 0 and ds.batched == 3


def test_custom_collate_fn_receives_a_list_of_samples():
    seen = []

    def collate(samples):
        seen.append(samples)
        return len(samples)

    assert list(DataLoader(_dataset(), batch_size=4, collate_fn=collate)) == [4, 4, 2]
    assert isinstance(seen[0], list) and len(seen[0][0]) == 2
    assert seen[0][1][1].item() == 1


def test_dataset_without_getitems_is_collated_sample_by_sample():
    x, i = next(iter(DataLoader(PairDataset(), batch_size=4)))
    assert isinstance(x, ddpgrad.Tensor) and x.shape == (4, 2) and x.dtype == ddpgrad.float32
    assert i.tolist() == [0, 1, 2, 3] and i.dtype == ddpgrad.int64


def test_iterable_dataset_is_batched_in_stream_order():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(7))

    assert [b.tolist() for b in DataLoader(Stream(), batch_size=3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b.tolist() for b in DataLoader(Stream(), batch_size=3, drop_last=True)] == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="IterableDataset"):
        DataLoader(Stream(), shuffle=True)


# ------------------------------------------------------------------ shuffling

def test_shuffle_with_a_seeded_generator_is_reproducible_and_reshuffles_each_epoch():
    make = lambda: DataLoader(_dataset(), batch_size=3, shuffle=True,  # noqa: E731
                              generator=ddpgrad.Generator().manual_seed(7))
    a, b = make(), make()
    epochs_a = [_order(a) for _ in range(3)]
    epochs_b = [_order(b) for _ in range(3)]
    assert epochs_a == epochs_b
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]
    for epoch in epochs_a:  # every index exactly once per epoch
        assert sorted(i for batch in epoch for i in batch) == list(range(N))
    other = DataLoader(_dataset(), batch_size=3, shuffle=True, generator=ddpgrad.Generator().manual_seed(8))
    assert _order(other) != epochs_a[0]


def test_shuffle_without_generator_follows_the_global_seed():
    loader = DataLoader(_dataset(), batch_size=5, shuffle=True)
    ddpgrad.manual_seed(3)
    first = [_order(loader), _order(loader)]
    ddpgrad.manual_seed(3)
    assert [_order(loader), _order(loader)] == first
    assert first[0] != list(range(N))


def test_random_sampler_with_replacement_and_num_samples():
    gen = ddpgrad.Generator().manual_seed(0)
    drawn = list(RandomSampler(range(4), replacement=True, num_samples=50, generator=gen))
    assert len(drawn) == 50 and set(drawn) <= set(range(4)) and len(set(drawn)) > 1
    long = list(RandomSampler(range(4), num_samples=10, generator=gen))
    assert len(long) == 10 and sorted(long[:8]) == sorted(list(range(4)) * 2)
    with pytest.raises(ValueError, match="num_samples=0"):
        RandomSampler(range(4), num_samples=0)


def test_samplers_and_custom_sampler_subclass():
    assert list(SequentialSampler(range(3))) == [0, 1, 2]
    assert sorted(SubsetRandomSampler([5, 7, 9])) == [5, 7, 9]
    sampler = BatchSampler(SequentialSampler(range(7)), 3, drop_last=False)
    assert list(sampler) == [[0, 1, 2], [3, 4, 5], [6]] and len(sampler) == 3
    assert len(BatchSampler(SequentialSampler(range(7)), 3, drop_last=True)) == 2

    class EvenFirst(Sampler):
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            return iter(list(range(0, self.n, 2)) + list(range(1, self.n, 2)))

        def __len__(self):
            return self.n

    loader = DataLoader(_dataset(), batch_size=4, sampler=EvenFirst(N))
    assert _order(loader) == [[0, 2, 4, 6], [8, 1, 3, 5], [7, 9]] and len(loader) == 3
    loader = DataLoader(_dataset(), batch_sampler=[[3, 1], [0]])
    assert _order(loader) == [[3, 1], [0]]


def test_conflicting_loader_options_are_errors_and_workers_warn():
    ds = _dataset()
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(ds, sampler=SequentialSampler(ds), shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(ds, batch_sampler=[[0]], batch_size=4)
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        DataLoader(ds, batch_size=0)
    with pytest.warns(UserWarning, match="num_workers is ignored"):
        loader = DataLoader(ds, batch_size=5, num_workers=2)
    assert len(list(loader)) == 2


# ------------------------------------------------------------------ collation

def test_collate_tuples_numbers_arrays_dicts_and_strings():
    Point = collections.namedtuple("Point", "x y")
    batch = default_collate([
        (np.array([1.0, 2.0]), 1, 0.5, True, "a", {"k": np.float32(1)}, Point(1, 2.0)),
        (np.array([3.0, 4.0]), 2, 1.5, False, "b", {"k": np.float32(2)}, Point(3, 4.0)),
    ])
    arr, ints, floats, bools, strings, mapping, point = batch
    assert isinstance(batch, tuple)
    assert isinstance(arr, ddpgrad.Tensor) and arr.dtype == ddpgrad.float64 and arr.tolist() == [[1, 2], [3, 4]]
    assert ints.dtype == ddpgrad.int64 and ints.tolist() == [1, 2]
    assert floats.dtype == ddpgrad.float64 and floats.tolist() == [0.5, 1.5]  # as PyTorch: float64
    assert bools.dtype == ddpgrad.bool and bools.tolist() == [True, False]
    assert strings == ["a", "b"]
    assert mapping["k"].dtype == ddpgrad.float32 and mapping["k"].tolist() == [1, 2]
    assert isinstance(point, Point) and point.x.tolist() == [1, 3] and point.y.dtype == ddpgrad.float64


def test_collate_stacks_tensors_and_keeps_lists_as_lists():
    t = default_collate([ddpgrad.ones(2, 3), ddpgrad.zeros(2, 3)])
    assert t.shape == (2, 2, 3) and t._data[0].all() and not t._data[1].any()
    lists = default_collate([[1, 2.0], [3, 4.0]])
    assert isinstance(lists, list) and lists[0].tolist() == [1, 3]
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="found object"):
        default_collate([object(), object()])


def test_collated_batches_are_not_in_the_autograd_graph():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, y = next(iter(DataLoader(_dataset(), batch_size=4)))
    assert x.grad_fn is None and not x.requires_grad
