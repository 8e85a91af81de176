"""PyTorch's type promotion: the dtype of ``a (op) b`` for tensors and Python numbers.

Operands are ranked by category (bool < integer < floating < complex) and by kind: a tensor with
dimensions outranks a 0-d tensor, which outranks a Python number. The result takes the dtype of
the highest kind that holds the highest category, so ``float32 + float64 0-d`` stays float32 and
``int64 tensor * 2.5`` becomes the default float dtype, as in PyTorch (NumPy would give float64).
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor

_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def category(dtype):
    return _CATEGORY[dtype.kind]


def promote_types(a, b):
    """The dtype two tensors' dtypes combine to (PyTorch's table: int with float gives the float)."""
    if a == b:
        return a
    ca, cb = category(a), category(b)
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def _number_dtype(x):
    if isinstance(x, np.generic):
        x = x.item()  # NumPy scalars count as Python numbers, as in PyTorch
    if isinstance(x, bool):
        return backend.bool_
    if isinstance(x, int):
        return backend.int64
    if isinstance(x, float):
        return backend.get_default_dtype()
    if isinstance(x, complex):
        return np.dtype(np.complex64 if backend.get_default_dtype() == backend.float32 else np.complex128)
    raise TypeError(f"unsupported operand of type {type(x).__name__}: expected a Tensor or a number")


def _combine(higher, lower):
    """Let a lower-ranked kind's dtype widen ``higher`` only when its category is higher."""
    if higher is None:
        return lower
    if lower is None:
        return higher
    ch, cl = category(higher), category(lower)
    if ch >= 2 and ch >= cl:
        return higher
    if ch == 0 or cl >= 2:
        return promote_types(higher, lower)
    return higher


def result_type(*operands):
    """The dtype PyTorch gives an elementwise op on ``operands`` (Tensors and numbers)."""
    ranked = [None, None, None]  # dimensioned tensors, 0-d tensors, numbers
    for x in operands:
        if isinstance(x, Tensor):
            slot, dtype = (0 if x._data.ndim else 1), x._data.dtype
        elif x is None:
            continue
        elif hasattr(x, "dtype") and not isinstance(x, np.generic):
            slot, dtype = (0 if x.ndim else 1), x.dtype  # a raw array counts as a tensor
        else:
            slot, dtype = 2, _number_dtype(x)
        ranked[slot] = dtype if ranked[slot] is None else promote_types(ranked[slot], dtype)
    return _combine(ranked[0], _combine(ranked[1], ranked[2]))


def promote(a, b):
    """``a`` and ``b`` ready for a binary op: tensors cast to the result dtype, numbers left as they are."""
    target = result_type(a, b)
    if isinstance(a, Tensor) and a._data.dtype != target:
        a = a.to(target)
    if isinstance(b, Tensor) and b._data.dtype != target:
        b = b.to(target)
    return a, b, target


def floating(a):
    """``a`` as a floating tensor: integer and bool tensors take the default float dtype."""
    if a._data.dtype.kind in "fc":
        return a
    return a.to(backend.get_default_dtype())
