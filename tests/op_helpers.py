"""``helper_test_op``: one check of an op against PyTorch and against finite differences.

In the spirit of early tinygrad's ``helper_test_op(shapes, torch_fn, our_fn)``: float64 inputs from
one NumPy generator go through the op in PyTorch (the oracle, CPU) and in ddpgrad; the outputs,
then the gradients of every input for one random upstream gradient, must agree to ~1e-10. Small
cases are also checked with ``ddpgrad.autograd.gradcheck`` (central differences), which needs no
PyTorch at all.
"""

from __future__ import annotations

import numpy as np
import pytest

import ddpgrad
from ddpgrad.autograd import gradcheck

TORCH_REASON = "PyTorch (CPU) is the parity oracle: pip install torch==2.13.0"
RTOL = 1e-10
ATOL = 1e-12
GRADCHECK_MAX_NUMEL = 48  # finite differences cost two forward passes per input element
LAYOUTS = ("contiguous", "transposed", "strided")


def make_array(rng, shape, low=-2.0, high=2.0, layout="contiguous"):
    """float64 values in [low, high) of ``shape``, laid out as asked.

    ``transposed`` gives the transpose of a C-ordered array (Fortran order), ``strided`` a view
    taking every second element of the last dimension: both non-contiguous, same shape.
    """
    shape = tuple(shape)
    if layout == "transposed" and len(shape) >= 2:
        return rng.uniform(low, high, size=shape[::-1]).T
    if layout == "strided" and len(shape) >= 1:
        return rng.uniform(low, high, size=shape[:-1] + (2 * shape[-1],))[..., ::2]
    return rng.uniform(low, high, size=shape)


def _per_input(value, n):
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _outputs(out):
    """The tensors of an op's result, as a list (a tensor, a tuple or a namedtuple of them)."""
    if isinstance(out, (list, tuple)):
        return list(out)
    return [out]


def _torch_dtype_name(t):
    return str(t.dtype).replace("torch.", "")


def assert_matches_torch(ours, theirs, rtol=RTOL, atol=ATOL, what="output"):
    """Same shape, same dtype, values within tolerance (NaN where PyTorch has NaN)."""
    assert ours is not None, f"{what}: ddpgrad gave None, PyTorch {tuple(theirs.shape)}"
    expected = theirs.detach().numpy()
    got = np.asarray(ours._data if isinstance(ours, ddpgrad.Tensor) else ours)
    assert tuple(got.shape) == tuple(expected.shape), (
        f"{what}: shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}"
    )
    assert got.dtype == np.dtype(_torch_dtype_name(theirs)), (
        f"{what}: dtype {got.dtype}, PyTorch {theirs.dtype}"
    )
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected, err_msg=what)
    else:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def helper_test_op(shapes, torch_fn, our_fn=None, *, low=-2.0, high=2.0, layout="contiguous",
                   arrays=None, grad=True, check_gradcheck=True, rtol=RTOL, atol=ATOL, seed=0):
    """Compare ``our_fn`` (default: ``torch_fn``, the API is the same) with PyTorch.

    ``shapes`` gives one float64 input per shape (values in [low, high); both may be per input);
    or pass ``arrays`` directly (ties, exact values). Every input requires grad when ``grad``.
    Outputs must match in shape, dtype and value; then one random upstream gradient goes back
    through both and every input's ``.grad`` must match. Small cases also pass ``gradcheck``
    unless ``check_gradcheck=False`` (points where the op is not differentiable, like ties).
    """
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    our_fn = torch_fn if our_fn is None else our_fn
    rng = np.random.default_rng(seed)
    if arrays is None:
        lows, highs = _per_input(low, len(shapes)), _per_input(high, len(shapes))
        arrays = [make_array(rng, s, lo, hi, layout) for s, lo, hi in zip(shapes, lows, highs)]
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]

    theirs_in = [torch.tensor(a, requires_grad=grad) for a in arrays]
    # ``_make`` keeps the array as it is (strides included): the op sees non-contiguous input.
    ours_in = [ddpgrad.Tensor._make(a).requires_grad_(grad) for a in arrays]
    theirs_out = _outputs(torch_fn(*theirs_in))
    ours_out = _outputs(our_fn(*ours_in))
    assert len(ours_out) == len(theirs_out), f"{len(ours_out)} outputs, PyTorch {len(theirs_out)}"
    for k, (o, t) in enumerate(zip(ours_out, theirs_out)):
        assert_matches_torch(o, t, rtol, atol, what=f"output {k}")
        assert o.requires_grad == t.requires_grad, (
            f"output {k}: requires_grad {o.requires_grad}, PyTorch {t.requires_grad}"
        )

    if not grad:
        return
    pairs = [(o, t) for o, t in zip(ours_out, theirs_out) if t.requires_grad]
    if not pairs:
        return
    upstream = [rng.standard_normal(tuple(t.shape)) for _, t in pairs]
    torch.autograd.backward([t for _, t in pairs], [torch.tensor(g) for g in upstream])
    ddpgrad.autograd.backward([o for o, _ in pairs], [ddpgrad.tensor(g) for g in upstream])
    for i, (o, t) in enumerate(zip(ours_in, theirs_in)):
        if t.grad is None:
            assert o.grad is None, f"input {i}: PyTorch has no gradient, ddpgrad has one"
            continue
        assert_matches_torch(o.grad, t.grad, rtol, atol, what=f"gradient of input {i}")

    if check_gradcheck and all(a.size <= GRADCHECK_MAX_NUMEL for a in arrays):
        fresh = [ddpgrad.Tensor._make(a.copy()).requires_grad_() for a in arrays]
        assert gradcheck(our_fn, fresh)
