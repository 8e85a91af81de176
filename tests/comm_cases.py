"""Rank-dependent collective inputs with exact expected results, shared by the threads and MPI
suites (every value is a small integer, so each op's result is exact in every dtype)."""

import numpy as np

REFERENCE = {"sum": np.add, "max": np.maximum, "min": np.minimum, "prod": np.multiply}


def rank_values(rank, n, dtype):
    """Small nonzero integers in [-3, 3] (uint16: [1, 7]) that differ per rank and element, so
    every op's exact result is representable in every dtype (float16 included) and which rank
    holds the max or min changes from element to element."""
    pattern = np.array([-3, -2, -1, 1, 2, 3], dtype=np.int64)
    rows = -(-n // pattern.size)
    values = np.broadcast_to(np.roll(pattern, -3 * rank), (rows, pattern.size)).ravel()[:n]
    return values + 4 if np.dtype(dtype) == np.uint16 else values


def expected(op, world_size, n, dtype):
    result = rank_values(0, n, dtype)
    for rank in range(1, world_size):
        result = REFERENCE[op](result, rank_values(rank, n, dtype))  # in int64: exact
    return result
