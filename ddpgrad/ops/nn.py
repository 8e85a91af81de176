"""Fused ops behind the layers and losses: one graph node each, so less Python per step and the
numerically stable formulas (log-softmax inside cross-entropy, softplus inside BCE)."""

from __future__ import annotations

from ..autograd.function import Function, gradient_destination
from ..backend import array_module
from .elementwise import sigmoid_array
from .reduce import log_softmax_array


def _wants(ctx, i):
    return ctx.next_nodes[i] is not None


class Linear(Function):
    """``x @ weight.T + bias`` for ``x`` of shape (*, in_features)."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
            raise RuntimeError(
                f"linear: input of shape {list(x.shape)} does not fit weight of shape "
                f"{list(weight.shape)}: the input's last dimension must be in_features={weight.shape[1]}"
            )
        ctx.save_for_backward(x, weight)
        out = x @ weight.T
        if bias is not None:
            out += bias
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx = grad @ weight if _wants(ctx, 0) else None
        g2 = grad.reshape(-1, grad.shape[-1]) if grad.ndim != 2 else grad
        gw = gb = None
        if _wants(ctx, 1):
            x2 = x.reshape(-1, x.shape[-1])
            into = gradient_destination(ctx, 1)  # the weight's bucket view under DDP: no copy
            gw = g2.T @ x2 if into is None else array_module(g2).matmul(_scaled(g2, into[1]).T, x2, out=into[0])
        if len(ctx.next_nodes) > 2 and _wants(ctx, 2):
            into = gradient_destination(ctx, 2)
            gb = g2.sum(axis=0) if into is None else _scaled(g2, into[1]).sum(axis=0, out=into[0])
        return gx, gw, gb


def _scaled(grad, scale):
    """``scale * grad`` (the upstream gradient is small: scaling it is cheaper than the result)."""
    return grad if scale == 1.0 else grad * scale


def _reduce(loss, reduction, denom=None):
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / (loss.size if denom is None else denom)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _grad_scale(grad, reduction, shape, denom):
    """The upstream gradient of each element of an unreduced loss."""
    if reduction == "none":
        return grad
    xp = array_module(grad)
    if reduction == "mean":
        grad = grad / denom
    return xp.broadcast_to(grad, shape)


class MSELoss(Function):
    @staticmethod
    def forward(ctx, a, b, reduction="mean"):
        diff = a - b
        ctx.save_for_backward(diff)
        ctx.reduction = reduction
        return _reduce(diff * diff, reduction)

    @staticmethod
    def backward(ctx, grad):
        (diff,) = ctx.saved_tensors
        g = diff * (2 * _grad_scale(grad, ctx.reduction, diff.shape, diff.size))
        return g, (-g if _wants(ctx, 1) else None)


class L1Loss(Function):
    @staticmethod
    def forward(ctx, a, b, reduction="mean"):
        diff = a - b
        ctx.save_for_backward(diff)
        ctx.reduction = reduction
        return _reduce(array_module(diff).abs(diff), reduction)

    @staticmethod
    def backward(ctx, grad):
        (diff,) = ctx.saved_tensors
        g = array_module(diff).sign(diff) * _grad_scale(grad, ctx.reduction, diff.shape, diff.size)
        return g, (-g if _wants(ctx, 1) else None)


def check_class_targets(target, num_classes, ignore_index, who):
    """Class-index targets must be integers in [0, num_classes) (or ``ignore_index``)."""
    xp = array_module(target)
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{who}: expected class indices of an integer dtype (int64), got {target.dtype}; "
            f"convert them with target.long()"
        )
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        pos = int(xp.argmax(bad.reshape(-1)))
        value = int(target.reshape(-1)[pos])
        raise IndexError(
            f"{who}: target {value} (at flat position {pos}) is out of range for {num_classes} "
            f"classes; labels must be integers in [0, {num_classes - 1}]"
            + (f" or ignore_index={ignore_index}" if ignore_index >= 0 or ignore_index < -1 else "")
        )
    return valid


class CrossEntropy(Function):
    """Cross-entropy of logits (N, C) with class indices (N,) or class probabilities (N, C)."""

    @staticmethod
    def forward(ctx, logits, target, weight=None, ignore_index=-100, reduction="mean",
                label_smoothing=0.0):
        xp = array_module(logits)
        n, c = logits.shape
        logp = log_softmax_array(logits, 1)
        eps = label_smoothing
        if target.dtype.kind == "f":
            if target.shape != logits.shape:
                raise RuntimeError(
                    f"cross_entropy: class-probability targets must have the input's shape "
                    f"{list(logits.shape)}, got {list(target.shape)}; for class indices use an integer dtype"
                )
            probs = target * (1 - eps) + eps / c if eps else target
            coef = probs * weight if weight is not None else probs
            denom = n
        else:
            if target.shape != (n,):
                raise RuntimeError(
                    f"cross_entropy: expected target of shape [{n}] for input of shape "
                    f"{[n, c]}, got {list(target.shape)}"
                )
            valid = check_class_targets(target, c, ignore_index, "cross_entropy")
            safe = xp.where(valid, target, 0)
            wrow = weight[safe] if weight is not None else xp.ones(n, dtype=logits.dtype)
            wrow = wrow * valid
            coef = xp.zeros_like(logp)
            coef[xp.arange(n), safe] = (1 - eps) * wrow
            if eps:
                smooth = (weight if weight is not None else xp.ones(c, dtype=logits.dtype)) * (eps / c)
                coef += valid[:, None] * smooth[None, :]
            denom = wrow.sum()
        loss = -(coef * logp).sum(axis=1)
        ctx.save_for_backward(logp, coef)
        ctx.reduction, ctx.denom = reduction, denom
        return _reduce(loss, reduction, denom)

    @staticmethod
    def backward(ctx, grad):
        logp, coef = ctx.saved_tensors
        xp = array_module(logp)
        g = _grad_scale(grad, ctx.reduction, (logp.shape[0],), ctx.denom)
        dlogits = xp.exp(logp) * coef.sum(axis=1, keepdims=True) - coef
        return dlogits * g[:, None]


class NLLLoss(Function):
    @staticmethod
    def forward(ctx, logp, target, weight=None, ignore_index=-100, reduction="mean"):
        xp = array_module(logp)
        n, c = logp.shape
        if target.shape != (n,):
            raise RuntimeError(
                f"nll_loss: expected target of shape [{n}] for input of shape {[n, c]}, got {list(target.shape)}"
            )
        valid = check_class_targets(target, c, ignore_index, "nll_loss")
        safe = xp.where(valid, target, 0)
        wrow = (weight[safe] if weight is not None else xp.ones(n, dtype=logp.dtype)) * valid
        rows = xp.arange(n)
        loss = -logp[rows, safe] * wrow
        denom = wrow.sum()
        ctx.shape, ctx.safe, ctx.wrow = logp.shape, safe, wrow
        ctx.reduction, ctx.denom = reduction, denom
        return _reduce(loss, reduction, denom)

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(ctx.wrow)
        g = _grad_scale(grad, ctx.reduction, ctx.wrow.shape, ctx.denom)
        out = xp.zeros(ctx.shape, dtype=ctx.wrow.dtype)
        out[xp.arange(ctx.shape[0]), ctx.safe] = -ctx.wrow * g
        return out


class BCEWithLogits(Function):
    @staticmethod
    def forward(ctx, x, y, weight=None, pos_weight=None, reduction="mean"):
        xp = array_module(x)
        if x.shape != y.shape:
            raise ValueError(
                f"binary_cross_entropy_with_logits: target size {list(y.shape)} must be the same "
                f"as input size {list(x.shape)}"
            )
        softplus_neg = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)  # log(1 + exp(-x))
        log_weight = 1 if pos_weight is None else (pos_weight - 1) * y + 1
        loss = (1 - y) * x + log_weight * softplus_neg
        if weight is not None:
            loss = loss * weight
        ctx.save_for_backward(x, y)
        ctx.softplus_neg, ctx.log_weight = softplus_neg, log_weight
        ctx.weight, ctx.pos_weight, ctx.reduction = weight, pos_weight, reduction
        return _reduce(loss, reduction)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        g = _grad_scale(grad, ctx.reduction, x.shape, x.size)
        if ctx.weight is not None:
            g = g * ctx.weight
        gx = g * ((1 - y) - ctx.log_weight * sigmoid_array(-x))
        gy = None
        if _wants(ctx, 1):
            pw = 1 if ctx.pos_weight is None else ctx.pos_weight
            gy = g * (-x + (pw - 1) * ctx.softplus_neg)
        return gx, gy


class LayerNorm(Function):
    """Normalise over the last ``len(normalized_shape)`` dims, then scale and shift."""

    @staticmethod
    def forward(ctx, x, weight=None, bias=None, ndims=1, eps=1e-5):
        xp = array_module(x)
        axes = tuple(range(x.ndim - ndims, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        centered = x - mu
        var = (centered * centered).mean(axis=axes, keepdims=True)
        rstd = 1 / xp.sqrt(var + eps)
        xhat = centered * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.axes = axes
        out = xhat * weight if weight is not None else xhat
        if bias is not None:
            out = out + bias
        return out

    @staticmethod
    def backward(ctx, grad):
        xhat, rstd, weight = ctx.saved_tensors
        axes = ctx.axes
        batch_axes = tuple(range(grad.ndim - len(axes)))
        gxhat = grad * weight if weight is not None else grad
        gx = rstd * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                     - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))
        gw = (grad * xhat).sum(axis=batch_axes) if weight is not None and _wants(ctx, 1) else None
        gb = grad.sum(axis=batch_axes) if len(ctx.next_nodes) > 2 and _wants(ctx, 2) else None
        return gx, gw, gb


class Embedding(Function):
    @staticmethod
    def forward(ctx, weight, indices, padding_idx=None):
        if indices.dtype.kind not in "iu":
            raise TypeError(f"embedding: indices must be integers (int64), got {indices.dtype}")
        n = weight.shape[0]
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n):
            raise IndexError(
                f"embedding: index out of range: indices span [{int(indices.min())}, "
                f"{int(indices.max())}] but the table has {n} rows"
            )
        ctx.shape, ctx.indices, ctx.padding_idx = weight.shape, indices, padding_idx
        return weight[indices]

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        out = xp.zeros(ctx.shape, dtype=grad.dtype)
        xp.add.at(out, ctx.indices.reshape(-1), grad.reshape(-1, ctx.shape[1]))
        if ctx.padding_idx is not None:
            out[ctx.padding_idx] = 0
        return out
