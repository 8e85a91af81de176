"""Finite-difference check of analytic gradients (float64 central differences)."""

from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..tensor import Tensor
from .differentiate import grad as autograd_grad
from .grad_mode import no_grad


class GradcheckError(RuntimeError):
    """The analytic and numerical gradients disagree."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """Compare ``fn``'s backward with central differences for every input that requires grad.

    Inputs should be float64. Returns True, or raises ``GradcheckError`` naming the output, the
    input, the worst element and both values (returns False with ``raise_exception=False``).
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    positions = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not positions:
        raise ValueError("gradcheck: no input requires grad")
    for i in positions:
        if inputs[i].dtype.itemsize < 8:
            raise ValueError(f"gradcheck needs float64 inputs, input {i} is {inputs[i].dtype}")

    def flat_outputs():
        out = fn(*inputs)
        outs = (out,) if isinstance(out, Tensor) else tuple(out)
        return outs

    outs = flat_outputs()
    sizes = [o.numel() for o in outs]
    for i in positions:
        t = inputs[i]
        xp = array_module(t._data)
        numeric = _numerical_jacobian(flat_outputs, t, eps)  # (total outputs, t.numel())
        analytic = xp.zeros_like(numeric)
        row = 0
        for k, out in enumerate(outs):
            for j in range(sizes[k]):
                if out.requires_grad:
                    seed = xp.zeros(out.shape, dtype=out.dtype)
                    seed.reshape(-1)[j] = 1
                    (g,) = autograd_grad(flat_outputs()[k], [t], grad_outputs=[Tensor._make(seed)],
                                         allow_unused=True)
                    if g is not None:
                        analytic[row] = g._data.reshape(-1)
                row += 1
        err = xp.abs(analytic - numeric)
        bad = err > atol + rtol * xp.abs(numeric)
        if bool(bad.any()):
            r, c = np.unravel_index(int(xp.argmax(xp.where(bad, err, -1).reshape(-1))), err.shape)
            message = (
                f"gradcheck: d(output element {r})/d(input {i} element {c}) is wrong for input {i} of "
                f"shape {list(t.shape)}: analytic {float(analytic[r, c])!r}, numerical "
                f"{float(numeric[r, c])!r} (atol={atol}, rtol={rtol})"
            )
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True


def _numerical_jacobian(flat_outputs, t, eps):
    xp = array_module(t._data)
    data = t._data

    def evaluate():
        return xp.concatenate([o._data.reshape(-1).astype(xp.float64) for o in flat_outputs()])

    columns = []
    with no_grad():
        for idx in np.ndindex(*data.shape):
            orig = data[idx].item()
            data[idx] = orig + eps
            plus = evaluate()
            data[idx] = orig - eps
            minus = evaluate()
            data[idx] = orig
            columns.append((plus - minus) / (2 * eps))
    if not columns:
        return xp.zeros((evaluate().size, 0))
    return xp.stack(columns, axis=1)
