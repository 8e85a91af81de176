"""Ops that pick or place values by an index tensor along one dimension: gather, scatter, sort."""

from __future__ import annotations

from ..autograd.function import Function
from ..backend import array_module
from .arith import _wants


def along(index, dim):
    """A fancy index addressing ``x[i_0, ..., index[i], ..., i_n]`` for every position of ``index``."""
    xp = array_module(index)
    parts = []
    for d, n in enumerate(index.shape):
        if d == dim:
            parts.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            parts.append(xp.arange(n).reshape(shape))
    return tuple(parts)


def check_index(name, a, dim, index):
    if index.dtype.kind not in "iu":
        raise RuntimeError(f"{name}(): Expected dtype int64 for index, got {index.dtype}")
    if index.ndim != a.ndim and a.ndim:
        raise RuntimeError(
            f"{name}(): Index tensor must have the same number of dimensions as input tensor "
            f"(index has {index.ndim}, input has {a.ndim})"
        )
    for d in range(index.ndim):
        if d != dim and index.shape[d] > a.shape[d]:
            raise RuntimeError(
                f"{name}(): Size does not match at dimension {d}: index {list(index.shape)} must not "
                f"be larger than input {list(a.shape)} apart from dimension {dim}"
            )
    if index.size and (int(index.min()) < -a.shape[dim] or int(index.max()) >= a.shape[dim]):
        raise RuntimeError(
            f"{name}(): index out of range: values must be in [0, {a.shape[dim] - 1}] for dimension "
            f"{dim} of size {a.shape[dim]}, got [{int(index.min())}, {int(index.max())}]"
        )


class Gather(Function):
    @staticmethod
    def forward(ctx, a, index, dim=0):
        check_index("gather", a, dim, index)
        ctx.where, ctx.shape = along(index, dim), a.shape
        return a[ctx.where]

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        out = xp.zeros(ctx.shape, dtype=grad.dtype)
        xp.add.at(out, ctx.where, grad)
        return out, None


class Scatter(Function):
    """``a`` with ``src`` written (or, with ``add=True``, added) at ``index`` along ``dim``."""

    @staticmethod
    def forward(ctx, a, index, src, dim=0, add=False):
        check_index("scatter_add" if add else "scatter", a, dim, index)
        xp = array_module(a)
        where = along(index, dim)
        part = src[tuple(slice(0, n) for n in index.shape)] if getattr(src, "ndim", 0) else src
        out = a.copy()
        if add:
            xp.add.at(out, where, part)
        else:
            out[where] = part
        ctx.where, ctx.add, ctx.index_shape = where, add, index.shape
        ctx.src_shape = getattr(src, "shape", None)
        return out

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        ga = gs = None
        if _wants(ctx, 0):
            ga = grad
            if not ctx.add:
                ga = grad.copy()
                ga[ctx.where] = 0
        if len(ctx.next_nodes) > 2 and _wants(ctx, 2) and ctx.src_shape is not None:
            gs = xp.zeros(ctx.src_shape, dtype=grad.dtype)
            gs[tuple(slice(0, n) for n in ctx.index_shape)] = grad[ctx.where]
        return ga, None, gs


class TakeAlong(Function):
    """Values at ``index`` along ``dim`` where ``index`` has the input's shape but for ``dim`` (sort, topk)."""

    @staticmethod
    def forward(ctx, a, index, dim=-1):
        ctx.where, ctx.shape = along(index, dim), a.shape
        return a[ctx.where]

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        out = xp.zeros(ctx.shape, dtype=grad.dtype)
        out[ctx.where] = grad  # the positions are distinct
        return out, None
