"""Elementwise binary arithmetic and matrix product."""

from __future__ import annotations

from ..autograd.engine import unbroadcast
from ..autograd.function import Function
from ..backend import array_module


def _wants(ctx, i):
    return ctx.next_nodes[i] is not None


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return grad, (-grad if _wants(ctx, 1) else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return (grad * b if _wants(ctx, 0) else None), (grad * a if _wants(ctx, 1) else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a / b
        ctx.save_for_backward(b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        b, out = ctx.saved_tensors
        ga = grad / b
        return ga, (-ga * out if _wants(ctx, 1) else None)


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved_tensors
        xp = array_module(out)
        ga = gb = None
        if _wants(ctx, 0):
            if isinstance(b, (int, float)):
                ga = grad * 0.0 if b == 0 else grad * (b * a ** (b - 1))
            else:
                with _quiet(xp):  # 0 ** -1 where the exponent is 0: masked just below
                    ga = grad * (b * a ** (b - 1))
                ga = xp.where(xp.asarray(b) == 0, 0, ga)  # d(a**0)/da = 0, even at a = 0
        if _wants(ctx, 1):
            with _quiet(xp):
                gb = grad * (out * xp.log(a))
            gb = xp.where((xp.asarray(a) == 0) & (xp.asarray(b) >= 0), 0, gb)
        return ga, gb


class Matmul(Function):
    """``a @ b`` with NumPy's rules: 1-D operands are promoted, leading dims broadcast."""

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise RuntimeError(
                f"matmul: both arguments need at least 1 dimension, got shapes {tuple(a.shape)} "
                f"and {tuple(b.shape)}"
            )
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if ka != kb:
            raise RuntimeError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied "
                f"({ka} != {kb}): the last dimension of the first must equal the "
                f"{'second-to-last' if b.ndim > 1 else 'only'} dimension of the second"
            )
        ctx.save_for_backward(a, b)
        try:
            return a @ b
        except ValueError:  # the batch dimensions do not broadcast
            raise RuntimeError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied: "
                f"the batch dimensions {tuple(a.shape[:-2])} and {tuple(b.shape[:-2])} do not broadcast"
            ) from None

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        xp = array_module(grad)
        if a.ndim == 1 and b.ndim == 1:
            return grad * b, grad * a
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = grad
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        ga = gb = None
        if _wants(ctx, 0):
            ga = g2 @ xp.swapaxes(b2, -1, -2)
            ga = _sum_to(ga, a2.shape).reshape(a.shape)
        if _wants(ctx, 1):
            gb = xp.swapaxes(a2, -1, -2) @ g2
            gb = _sum_to(gb, b2.shape).reshape(b.shape)
        return ga, gb


def _sum_to(x, shape):
    return unbroadcast(x, shape)


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return array_module(a).maximum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return _split_ties(grad, a > b, a == b)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return array_module(a).minimum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return _split_ties(grad, a < b, a == b)


def _split_ties(grad, a_wins, tie):
    """Gradient of max/min of two arrays: to the winner, half each on ties (as PyTorch)."""
    share = a_wins + 0.5 * tie
    return grad * share, grad * (1 - share)


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.cond = cond
        return array_module(cond).where(cond, a, b)

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        cond = ctx.cond
        zero = xp.zeros((), dtype=grad.dtype)
        ga = xp.where(cond, grad, zero) if _wants(ctx, 1) else None
        gb = xp.where(cond, zero, grad) if _wants(ctx, 2) else None
        return None, ga, gb


class _quiet:
    """Silence NumPy floating-point warnings (log(0) in a masked-out branch, say)."""

    def __init__(self, xp):
        self._errstate = getattr(xp, "errstate", None)

    def __enter__(self):
        self._ctx = self._errstate(all="ignore") if self._errstate else None
        if self._ctx:
            self._ctx.__enter__()

    def __exit__(self, *exc):
        if self._ctx:
            self._ctx.__exit__(*exc)
