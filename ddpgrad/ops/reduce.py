"""Reductions and the softmax family."""

from __future__ import annotations

from ..autograd.function import Function
from ..backend import array_module
from .arith import _quiet


def wrap_dim(dim, ndim):
    """``dim`` (possibly negative) as an axis of an ``ndim``-dimensional array, or IndexError.

    As in PyTorch, a 0-d tensor accepts dim 0 and -1.
    """
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})"
        )
    return dim % rank


def normalize_dims(dim, ndim):
    """``dim`` (None, int or sequence, possibly negative) as a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = [wrap_dim(d, ndim) for d in dims]
    return tuple(sorted(set(out))) if ndim else ()


def _expand_back(grad, shape, axes, keepdim):
    """Broadcast a reduced gradient back to the input's shape (a view, no copy)."""
    xp = array_module(grad)
    if not keepdim and axes:
        grad = xp.expand_dims(grad, axes)
    return xp.broadcast_to(grad, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        axes = normalize_dims(dim, a.ndim)
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        return array_module(a).sum(a, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad):
        return _expand_back(grad, ctx.shape, ctx.axes, ctx.keepdim)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        axes = normalize_dims(dim, a.ndim)
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        count = 1
        for ax in axes:
            count *= a.shape[ax]
        ctx.count = count
        return array_module(a).mean(a, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad):
        return _expand_back(grad / ctx.count, ctx.shape, ctx.axes, ctx.keepdim)


class Var(Function):
    """Variance with ``correction`` (1 = Bessel's, PyTorch's default); ``std=True`` for its root."""

    @staticmethod
    def forward(ctx, a, dim=None, correction=1, keepdim=False, std=False):
        xp = array_module(a)
        axes = normalize_dims(dim, a.ndim)
        count = 1
        for ax in axes:
            count *= a.shape[ax]
        centered = a - a.mean(axis=axes, keepdims=True)
        var = (centered * centered).sum(axis=axes, keepdims=keepdim) / max(count - correction, 0)
        out = xp.sqrt(var) if std else var
        ctx.save_for_backward(centered, out)
        ctx.axes, ctx.keepdim, ctx.denom, ctx.std = axes, keepdim, count - correction, std
        return out

    @staticmethod
    def backward(ctx, grad):
        centered, out = ctx.saved_tensors
        xp = array_module(grad)
        scale = grad / ctx.denom
        if ctx.std:
            with _quiet(xp):
                scale = scale / out
            scale = xp.where(out == 0, 0, scale)  # a constant slice: PyTorch's gradient is 0, not nan
        else:
            scale = 2 * scale
        if not ctx.keepdim and ctx.axes:
            scale = xp.expand_dims(scale, ctx.axes)
        return centered * scale


class MaxMin(Function):
    """max/min over ``dim`` (or all): the gradient is shared evenly among tied extremes."""

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False, largest=True):
        xp = array_module(a)
        axes = normalize_dims(dim, a.ndim)
        if a.size == 0 and (not axes or any(a.shape[ax] == 0 for ax in axes)):
            raise RuntimeError(
                f"{'max' if largest else 'min'}(): cannot reduce over an empty dimension of a tensor "
                f"of shape {tuple(a.shape)} (dim={dim}): the result has no identity"
            )
        out = (xp.max if largest else xp.min)(a, axis=axes, keepdims=True)
        ctx.save_for_backward(a, out)
        ctx.axes, ctx.keepdim = axes, keepdim
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        xp = array_module(grad)
        mask = a == out
        count = mask.sum(axis=ctx.axes, keepdims=True)
        if not ctx.keepdim and ctx.axes:
            grad = xp.expand_dims(grad, ctx.axes)
        return mask * (grad / count)


class MaxMinDim(Function):
    """``max(dim)``/``min(dim)`` values; the gradient goes to the index that was chosen."""

    @staticmethod
    def forward(ctx, a, indices, dim, keepdim=False, largest=True):
        xp = array_module(a)
        idx = xp.expand_dims(indices, dim)  # argmax/argmin drop ``dim``, whatever keepdim says
        values = xp.take_along_axis(a, idx, axis=dim)
        ctx.shape, ctx.idx, ctx.dim, ctx.keepdim = a.shape, idx, dim, keepdim
        return values if keepdim else values.squeeze(dim)

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        if not ctx.keepdim:
            grad = xp.expand_dims(grad, ctx.dim)
        n = ctx.shape[ctx.dim]
        positions = xp.arange(n).reshape([n if d == ctx.dim else 1 for d in range(len(ctx.shape))])
        return (positions == ctx.idx) * grad  # one-hot along dim (CuPy has no put_along_axis)


class LogSumExp(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim=False):
        xp = array_module(a)
        axes = normalize_dims(dim, a.ndim)
        if a.size:
            m = xp.max(a, axis=axes, keepdims=True)
            m = xp.where(xp.isfinite(m), m, 0)
        else:
            m = 0  # nothing to shift; an empty dim sums to 0 and gives -inf, as in PyTorch
        with _quiet(xp):
            out = xp.log(xp.sum(xp.exp(a - m), axis=axes, keepdims=True)) + m
        ctx.save_for_backward(a, out)
        ctx.axes, ctx.keepdim = axes, keepdim
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        xp = array_module(grad)
        if not ctx.keepdim and ctx.axes:
            grad = xp.expand_dims(grad, ctx.axes)
        return grad * xp.exp(a - out)


def log_softmax_array(a, axis):
    xp = array_module(a)
    if a.size == 0:
        return a.copy()
    shifted = a - xp.max(a, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def softmax_array(a, axis):
    xp = array_module(a)
    if a.size == 0:
        return a.copy()
    e = xp.exp(a - xp.max(a, axis=axis, keepdims=True))
    e /= xp.sum(e, axis=axis, keepdims=True)
    return e


class Softmax(Function):
    @staticmethod
    def forward(ctx, a, dim):
        out = softmax_array(a, dim)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        gy = grad * out
        return gy - out * gy.sum(axis=ctx.dim, keepdims=True)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, a, dim):
        out = log_softmax_array(a, dim)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        xp = array_module(grad)
        return grad - xp.exp(out) * grad.sum(axis=ctx.dim, keepdims=True)


class Norm(Function):
    """The vector p-norm over ``dim`` (all elements when None); p may be inf, -inf or 0."""

    @staticmethod
    def forward(ctx, a, p=2.0, dim=None, keepdim=False):
        xp = array_module(a)
        axes = normalize_dims(dim, a.ndim)
        mag = xp.abs(a)
        if p == float("inf"):
            out = xp.max(mag, axis=axes, keepdims=True)
        elif p == float("-inf"):
            out = xp.min(mag, axis=axes, keepdims=True)
        elif p == 0:
            out = (mag != 0).sum(axis=axes, keepdims=True).astype(a.dtype)
        elif p == 1:
            out = mag.sum(axis=axes, keepdims=True)
        elif p == 2:
            out = xp.sqrt((mag * mag).sum(axis=axes, keepdims=True))
        else:
            out = (mag ** p).sum(axis=axes, keepdims=True) ** (1.0 / p)
        ctx.save_for_backward(a, out)
        ctx.p, ctx.axes, ctx.keepdim = p, axes, keepdim
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        xp = array_module(grad)
        if not ctx.keepdim and ctx.axes:
            grad = xp.expand_dims(grad, ctx.axes)
        p = ctx.p
        if p == 0:
            return xp.zeros_like(a)
        if p in (float("inf"), float("-inf")):
            mask = xp.abs(a) == out
            return xp.sign(a) * mask * (grad / mask.sum(axis=ctx.axes, keepdims=True))
        if p == 1:
            return xp.sign(a) * grad
        with _quiet(xp):
            if p == 2:
                scale = a / out
            else:
                scale = xp.sign(a) * xp.abs(a) ** (p - 1) / out ** (p - 1)
        return grad * xp.where(out == 0, 0, scale)  # the subgradient 0 at the origin, as PyTorch
