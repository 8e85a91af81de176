"""Products and running sums along a dimension: prod, cumsum, cumprod."""

from __future__ import annotations

from ..autograd.function import Function
from ..backend import array_module
from .arith import _quiet


def _leading(x, axis, count):
    """The first ``count`` entries of ``x`` along ``axis`` (a view)."""
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, count)
    return x[tuple(index)]


def _exclusive_products(x, axis):
    """For each position, the product of all other entries along ``axis`` (no division, zeros are fine)."""
    xp = array_module(x)
    n = x.shape[axis]
    ones = xp.ones_like(_leading(x, axis, 1))
    left = xp.cumprod(xp.concatenate([ones, _leading(x, axis, n - 1)], axis=axis), axis=axis)
    flipped = xp.flip(x, axis)
    right = xp.cumprod(xp.concatenate([ones, _leading(flipped, axis, n - 1)], axis=axis), axis=axis)
    return left * xp.flip(right, axis)


class Prod(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        xp = array_module(a)
        ctx.shape, ctx.dim, ctx.keepdim = a.shape, dim, keepdim
        ctx.save_for_backward(a)
        return xp.prod(a, axis=dim, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        xp = array_module(grad)
        if ctx.dim is None:
            flat = a.reshape(-1)
            if flat.size == 0:
                return xp.zeros(ctx.shape, dtype=grad.dtype)
            return (grad * _exclusive_products(flat, 0)).reshape(ctx.shape)
        if a.shape[ctx.dim] == 0:
            return xp.zeros(ctx.shape, dtype=grad.dtype)
        if not ctx.keepdim:
            grad = xp.expand_dims(grad, ctx.dim)
        return grad * _exclusive_products(a, ctx.dim)


class Cumsum(Function):
    @staticmethod
    def forward(ctx, a, dim=0):
        ctx.dim = dim
        return array_module(a).cumsum(a, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        return xp.flip(xp.cumsum(xp.flip(grad, ctx.dim), axis=ctx.dim), ctx.dim)


class Cumprod(Function):
    @staticmethod
    def forward(ctx, a, dim=0):
        out = array_module(a).cumprod(a, axis=dim)
        ctx.save_for_backward(a, out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        xp = array_module(grad)
        d = ctx.dim
        if not bool((a == 0).any()):
            with _quiet(xp):
                return xp.flip(xp.cumsum(xp.flip(grad * out, d), axis=d), d) / a
        # zeros present: d out_j / d a_k = prod_{i <= j, i != k} a_i, summed over j >= k
        a_last = xp.moveaxis(a, d, -1)
        g_last = xp.moveaxis(grad, d, -1)
        n = a_last.shape[-1]
        result = xp.zeros_like(a_last)
        for k in range(n):
            others = a_last.copy()
            others[..., k] = 1
            partial = xp.cumprod(others, axis=-1)[..., k:]
            result[..., k] = (g_last[..., k:] * partial).sum(axis=-1)
        return xp.moveaxis(result, -1, d)
