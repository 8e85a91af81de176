"""``ddpgrad.linalg``: norms (and the matrix products PyTorch lists here)."""

from __future__ import annotations

from .. import ops as _ops


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):  # noqa: A002 - PyTorch's names
    """The ``ord``-norm of ``x`` seen as a vector (over ``dim``, or all elements)."""
    return _ops.norm(x if dtype is None else x.to(dtype), ord, dim, keepdim)


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):  # noqa: N803
    """The Frobenius norm over the two ``dim``s (other matrix norms are not supported)."""
    if ord != "fro":
        raise NotImplementedError(f"matrix_norm(ord={ord!r}): only ord='fro' is supported")
    return _ops.norm(A if dtype is None else A.to(dtype), 2, dim, keepdim)


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):  # noqa: A002,N803
    """``vector_norm`` for a 1-D ``dim`` (or a flattened input); the Frobenius norm for a matrix."""
    if ord is None:
        return vector_norm(A, 2, dim, keepdim, dtype=dtype)
    if isinstance(dim, (tuple, list)) and len(dim) == 2 or (dim is None and A.ndim == 2):
        return matrix_norm(A, ord, (-2, -1) if dim is None else dim, keepdim, dtype=dtype)
    return vector_norm(A, ord, dim, keepdim, dtype=dtype)


matmul = _ops.matmul


def vecdot(x, y, *, dim=-1):  # noqa: F811
    return (x * y).sum(dim)
