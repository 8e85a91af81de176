"""The stateless side of ``ddpgrad.nn`` (``import ddpgrad.nn.functional as F``), PyTorch's names
and arguments. Layers and losses are one fused graph node each (see ``ddpgrad/ops/nn.py``)."""

from __future__ import annotations

import math
import warnings

from .. import backend, ops, random
from ..backend import array_module
from ..ops import nn as fused
from ..tensor import Tensor

_REDUCTIONS = ("none", "mean", "sum")


def _reduction(size_average, reduce, reduction):
    """Map PyTorch's deprecated ``size_average``/``reduce`` flags onto ``reduction``."""
    if size_average is None and reduce is None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{reduction} is not a valid value for reduction: use 'none', 'mean' or 'sum'")
        return reduction
    warnings.warn("size_average and reduce args will be deprecated, please use reduction='...' instead.",
                  stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


# ---------------------------------------------------------------------------- layers
def linear(input, weight, bias=None):  # noqa: A002 - PyTorch's argument names
    """``input @ weight.T + bias``."""
    if input.dtype != weight.dtype:  # PyTorch refuses too: a silent upcast would change the numbers
        raise RuntimeError(
            f"linear: input dtype {input.dtype} does not match weight dtype {weight.dtype}: convert "
            f"the input (x.to(ddpgrad.{weight.dtype})) or the model (model.to(ddpgrad.{input.dtype}))"
        )
    if bias is None:
        return fused.Linear.apply(input, weight)
    return fused.Linear.apply(input, weight, bias)


def relu(input, inplace=False):  # noqa: A002
    return input.relu_() if inplace else ops.relu(input)


def _activation(fn, inplace_name=None):
    """``F.name(input, ..., inplace=False)`` over the op ``fn`` (``inplace=True`` writes into input)."""
    def activation(input, *args, inplace=False, **kwargs):  # noqa: A002
        if inplace:
            return getattr(input, inplace_name or fn.__name__ + "_")(*args, **kwargs)
        return fn(input, *args, **kwargs)

    activation.__name__ = activation.__qualname__ = fn.__name__
    activation.__doc__ = fn.__doc__
    return activation


def _positional_inplace(fn, n_args):
    """PyTorch's positional ``inplace`` (``F.leaky_relu(x, 0.2, True)``) as the keyword."""
    base = _activation(fn)

    def activation(input, *args, **kwargs):  # noqa: A002
        if len(args) > n_args:
            kwargs["inplace"] = args[n_args]
            args = args[:n_args]
        return base(input, *args, **kwargs)

    activation.__name__ = activation.__qualname__ = fn.__name__
    return activation


silu = _activation(ops.silu)
mish = _activation(ops.mish)
hardsigmoid = _activation(ops.hardsigmoid)
hardswish = _activation(ops.hardswish)
relu6 = _activation(ops.relu6, "relu6_")
leaky_relu = _positional_inplace(ops.leaky_relu, 1)
elu = _positional_inplace(ops.elu, 1)
celu = _positional_inplace(ops.celu, 1)
selu = _positional_inplace(ops.selu, 0)
hardtanh = _positional_inplace(ops.hardtanh, 2)
softplus = ops.softplus
logsigmoid = ops.logsigmoid
softsign = ops.softsign
tanhshrink = ops.tanhshrink


def normalize(input, p=2.0, dim=1, eps=1e-12):  # noqa: A002
    """``input`` divided by its p-norm along ``dim`` (at least ``eps``)."""
    return input / ops.clamp_min(ops.norm(input, p, dim, keepdim=True), eps)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """The cosine of the angle between ``x1`` and ``x2`` along ``dim``."""
    dot = (x1 * x2).sum(dim)
    n1 = ops.clamp_min(ops.norm(x1, 2, dim), eps)
    n2 = ops.clamp_min(ops.norm(x2, 2, dim), eps)
    return dot / (n1 * n2)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    return ops.norm(x1 - x2 + eps, p, -1, keepdim=keepdim)


def gelu(input, approximate="none"):  # noqa: A002
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate argument must be either 'none' or 'tanh', got {approximate!r}")
    return ops.gelu(input, approximate)


def tanh(input):  # noqa: A002
    return ops.tanh(input)


def sigmoid(input):  # noqa: A002
    return ops.sigmoid(input)


def _softmax_dim(name, ndim):
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to "
                  f"include dim=X as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim=None, dtype=None):  # noqa: A002
    if dim is None:
        dim = _softmax_dim("softmax", input.ndim)
    return ops.softmax(input, dim, dtype)


def log_softmax(input, dim=None, dtype=None):  # noqa: A002
    if dim is None:
        dim = _softmax_dim("log_softmax", input.ndim)
    return ops.log_softmax(input, dim, dtype)


def dropout(input, p=0.5, training=True, inplace=False):  # noqa: A002
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (training only)."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    mask = random.bernoulli_mask(1 - p, input.shape, input.dtype, input.device)
    mask *= 1 / (1 - p)
    return input * Tensor._make(mask)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):  # noqa: A002
    """Normalise over the trailing ``normalized_shape`` dims, then scale by weight, shift by bias."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.ndim < len(shape) or tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape "
            f"[*, {', '.join(map(str, shape))}], but got input of size{list(input.shape)}"
        )
    return fused.LayerNorm.apply(input, weight, bias, ndims=len(shape), eps=eps)


def embedding(input, weight, padding_idx=None):  # noqa: A002
    """Rows of ``weight`` picked by the integer tensor ``input``; ``padding_idx``'s row gets no gradient."""
    if padding_idx is not None and padding_idx < 0:
        padding_idx += weight.shape[0]
    return fused.Embedding.apply(weight, input, padding_idx=padding_idx)


def one_hot(tensor, num_classes=-1):
    """Integer class indices to one-hot int64 vectors (a new last dimension; no gradient)."""
    data = tensor._data
    if data.dtype.kind not in "iu":
        raise RuntimeError(f"one_hot is only applicable to index tensor of an integer dtype, got {data.dtype}")
    xp = array_module(data)
    if num_classes == -1:
        if data.size == 0:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = int(data.max()) + 1
    if data.size and int(data.min()) < 0:
        raise RuntimeError("Class values must be non-negative.")
    if data.size and int(data.max()) >= num_classes:
        raise RuntimeError(f"Class values must be smaller than num_classes ({num_classes}).")
    return Tensor._make((data[..., None] == xp.arange(num_classes)).astype(backend.int64))


# ---------------------------------------------------------------------------- losses
def _check_same_size(input, target, who):  # noqa: A002
    if tuple(input.shape) != tuple(target.shape):
        warnings.warn(
            f"{who}: using a target size ({target.shape}) that is different to the input size "
            f"({input.shape}). This will likely lead to incorrect results due to broadcasting. "
            f"Please ensure they have the same size.", stacklevel=3)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):  # noqa: A002
    _check_same_size(input, target, "mse_loss")
    return fused.MSELoss.apply(input, target, reduction=_reduction(size_average, reduce, reduction))


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):  # noqa: A002
    _check_same_size(input, target, "l1_loss")
    return fused.L1Loss.apply(input, target, reduction=_reduction(size_average, reduce, reduction))


def _classes_last(input, target, who, probabilities=False):  # noqa: A002
    """Bring (C,) and (N, C, d1, ...) inputs to the (rows, C) layout of the fused ops.

    Returns the 2-D logits, the matching targets, and the shape of an unreduced loss.
    """
    if input.ndim == 0:
        raise RuntimeError(f"{who}: input must have a class dimension, got a 0-d tensor")
    if input.ndim == 2:
        return input, target, (input.shape[0],)
    if input.ndim == 1:
        expected, batch = (tuple(input.shape) if probabilities else ()), ()
    else:
        batch = (input.shape[0],) + tuple(input.shape[2:])
        expected = tuple(input.shape) if probabilities else batch
    if tuple(target.shape) != expected:
        hint = "; for class indices use an integer dtype" if probabilities else ""
        raise RuntimeError(
            f"{who}: expected target of shape {list(expected)} for input of shape "
            f"{list(input.shape)}, got {list(target.shape)}{hint}"
        )
    c = input.shape[0] if input.ndim == 1 else input.shape[1]
    if input.ndim == 1:
        return input.reshape(1, c), target.reshape(1, -1) if probabilities else target.reshape(1), batch
    classes_last = (0, *range(2, input.ndim), 1)
    logits = input.permute(classes_last).reshape(-1, c)
    target = target.permute(classes_last).reshape(-1, c) if probabilities else target.reshape(-1)
    return logits, target, batch


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,  # noqa: A002
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits ``input`` (N, C[, d...]) or (C,) against class indices
    (integer) or class probabilities (floating, the input's shape)."""
    reduction = _reduction(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    logits, target, batch = _classes_last(input, target, "cross_entropy", target.is_floating_point())
    loss = fused.CrossEntropy.apply(logits, target, weight, ignore_index=ignore_index,
                                    reduction=reduction, label_smoothing=label_smoothing)
    return loss.reshape(batch) if reduction == "none" else loss


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100,  # noqa: A002
             reduce=None, reduction="mean"):
    """Negative log-likelihood of log-probabilities ``input`` (N, C[, d...]) or (C,) at class indices."""
    reduction = _reduction(size_average, reduce, reduction)
    logp, target, batch = _classes_last(input, target, "nll_loss")
    loss = fused.NLLLoss.apply(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    return loss.reshape(batch) if reduction == "none" else loss


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,  # noqa: A002
                                     reduce=None, reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one numerically stable step."""
    reduction = _reduction(size_average, reduce, reduction)
    return fused.BCEWithLogits.apply(input, target, weight, pos_weight, reduction=reduction)


def _reduce_loss(loss, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


_BCE_LOG_FLOOR = -100.0  # PyTorch clamps log(p) at -100 so that p = 0 or 1 gives a finite loss


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,  # noqa: A002
                         reduction="mean"):
    """Binary cross-entropy of probabilities ``input`` (after a sigmoid) against ``target``."""
    reduction = _reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"Using a target size ({target.shape}) that is different to the input size ({input.shape}) "
            f"is deprecated. Please ensure they have the same size."
        )
    log_p = ops.clamp_min(ops.log(input), _BCE_LOG_FLOOR)
    log_q = ops.clamp_min(ops.log(1 - input), _BCE_LOG_FLOOR)
    loss = -(target * log_p + (1 - target) * log_q)
    if weight is not None:
        loss = loss * weight
    return _reduce_loss(loss, reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):  # noqa: A002
    """Squared error below ``delta``, linear above (continuous slope)."""
    _check_same_size(input, target, "huber_loss")
    diff = ops.abs(input - target)
    loss = ops.where(diff < delta, 0.5 * diff * diff, delta * (diff - 0.5 * delta))
    return _reduce_loss(loss, _reduction(None, None, reduction))


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):  # noqa: A002
    """Huber loss divided by ``beta``: squared below ``beta``, L1 above."""
    _check_same_size(input, target, "smooth_l1_loss")
    reduction = _reduction(size_average, reduce, reduction)
    diff = ops.abs(input - target)
    if beta == 0:
        return _reduce_loss(diff, reduction)
    loss = ops.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return _reduce_loss(loss, reduction)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):  # noqa: A002
    """KL(target || p) for log-probabilities ``input``; ``reduction='batchmean'`` is the true KL divergence."""
    if reduction == "batchmean":
        mode = "batchmean"
    else:
        mode = _reduction(size_average, reduce, reduction)
        if mode == "mean":
            warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support "
                          "size. 'batchmean' divides only by the batch size, and aligns with the KL div math "
                          "definition.", stacklevel=2)
    if log_target:
        loss = ops.exp(target) * (target - input)
    else:
        loss = ops.xlogy(target, target) - target * input
    if mode == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce_loss(loss, mode)


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):  # noqa: A002
    """log(1 + exp(-target * input)) for labels in {-1, 1}."""
    return _reduce_loss(ops.softplus(-target * input), _reduction(size_average, reduce, reduction))


def margin_ranking_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None, reduction="mean"):
    return _reduce_loss(ops.clamp_min(-target * (input1 - input2) + margin, 0),
                        _reduction(size_average, reduce, reduction))


def cosine_embedding_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None,
                          reduction="mean"):
    cos = cosine_similarity(input1, input2, dim=-1, eps=1e-12)
    loss = ops.where(target > 0, 1 - cos, ops.clamp_min(cos - margin, 0))
    return _reduce_loss(loss, _reduction(size_average, reduce, reduction))


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):  # noqa: A002
    v = ops.clamp_min(var, eps) if not var.requires_grad else var.clamp(min=eps)
    loss = 0.5 * (ops.log(v) + (input - target) ** 2 / v)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce_loss(loss, reduction)


def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8,  # noqa: A002
                     reduce=None, reduction="mean"):
    if log_input:
        loss = ops.exp(input) - target * input
    else:
        loss = input - target * ops.log(input + eps)
    if full:
        approx = target * ops.log(target) - target + 0.5 * ops.log(2 * math.pi * target)
        loss = loss + ops.where(target > 1, approx, 0.0)
    return _reduce_loss(loss, _reduction(size_average, reduce, reduction))
