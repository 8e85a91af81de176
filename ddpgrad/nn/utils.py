"""Gradient clipping and flat-vector views of parameters (``ddpgrad.nn.utils``)."""

from __future__ import annotations

from .. import ops
from ..autograd import no_grad
from ..backend import array_module
from ..tensor import Tensor

_CLIP_EPS = 1e-6  # PyTorch's guard against dividing by a zero total norm


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _norm(array, norm_type):
    return array_module(array).linalg.norm(array.reshape(-1), ord=norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients in place so that their joint ``norm_type``-norm is at most ``max_norm``.

    The norm is taken over all gradients together, as if concatenated into one vector. Returns that
    total norm (before clipping) as a tensor.
    """
    grads = _grads(parameters)
    if not grads:
        return ops.tensor(0.0)
    norm_type = float(norm_type)
    xp = array_module(grads[0]._data)
    total = _norm(xp.stack([_norm(g._data, norm_type) for g in grads]), norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it "
            f"cannot be clipped. To disable this error and scale the gradients by the non-finite norm "
            f"anyway, set `error_if_nonfinite=False`"
        )
    coef = xp.minimum(float(max_norm) / (total + _CLIP_EPS), 1.0)
    for g in grads:
        g.mul_(coef)
    return Tensor._make(xp.asarray(total))


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        g.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters):
    """All parameters flattened and concatenated into one (differentiable) vector."""
    return ops.cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec, parameters):
    """Copy slices of ``vec`` into the parameters, in place (their arrays are kept)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected a Tensor, but got: {type(vec).__name__}")
    start = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.copy_(vec._data[start:start + n].reshape(p.shape))
            start += n
