"""Type promotion: the dtype of every mix of operands equals PyTorch's (``torch.result_type``)."""

from __future__ import annotations

import itertools
import operator

import numpy as np
import pytest

import ddpgrad
from op_helpers import TORCH_REASON

torch = pytest.importorskip("torch", reason=TORCH_REASON)

DTYPES = ["bool", "uint8", "int8", "int32", "int64", "float16", "float32", "float64"]


def _operand(lib, kind):
    """``kind``: ('tensor' | 'zero_dim', dtype name) or a Python number."""
    if not isinstance(kind, tuple):
        return kind
    shape_kind, name = kind
    values = np.array([1, 2, 3] if shape_kind == "tensor" else 1).astype(name)
    return lib.tensor(values, dtype=getattr(lib, "bool" if name == "bool" else name))


KINDS = [("tensor", d) for d in DTYPES] + [("zero_dim", d) for d in DTYPES] + [True, 2, 2.5]
OPS = {"add": operator.add, "mul": operator.mul, "sub": operator.sub, "truediv": operator.truediv,
       "maximum": lambda a, b: (torch if isinstance(a, torch.Tensor) else ddpgrad).maximum(a, b)}


def _dtype_name(t):
    return str(t.dtype).replace("torch.", "")


@pytest.mark.parametrize("op", list(OPS))
def test_binary_result_dtypes_match_torch(op):
    fn = OPS[op]
    mismatches = []
    for a_kind, b_kind in itertools.product(KINDS, KINDS):
        if not isinstance(a_kind, tuple) and not isinstance(b_kind, tuple):
            continue
        if op == "maximum" and not (isinstance(a_kind, tuple) and isinstance(b_kind, tuple)):
            continue  # torch.maximum takes tensors only
        try:
            expected = _dtype_name(fn(_operand(torch, a_kind), _operand(torch, b_kind)))
        except RuntimeError:
            continue  # PyTorch refuses this mix (bool - bool, say)
        got = fn(_operand(ddpgrad, a_kind), _operand(ddpgrad, b_kind)).dtype.name
        if got != expected:
            mismatches.append(f"{a_kind} {op} {b_kind}: {got}, PyTorch {expected}")
    assert not mismatches, "\n".join(mismatches)


def test_result_type_matches_torch():
    for a_kind, b_kind in itertools.product(KINDS, KINDS):
        if not isinstance(a_kind, tuple):
            continue
        expected = _dtype_name(torch.empty(0, dtype=torch.result_type(_operand(torch, a_kind), _operand(torch, b_kind))))
        assert ddpgrad.result_type(_operand(ddpgrad, a_kind), _operand(ddpgrad, b_kind)).name == expected


def test_float32_model_accepts_a_power_with_an_int64_exponent():
    x = ddpgrad.linspace(-1, 1, 5)
    features = x.unsqueeze(-1) ** ddpgrad.tensor([1, 2, 3])
    assert features.dtype == ddpgrad.float32
    assert ddpgrad.nn.Linear(3, 1)(features).shape == (5, 1)


def test_int_over_int_gives_the_default_float_dtype():
    assert (ddpgrad.tensor([1, 2]) / ddpgrad.tensor([2, 4])).dtype == ddpgrad.float32
    ddpgrad.set_default_dtype(ddpgrad.float64)
    try:
        assert (ddpgrad.tensor([1, 2]) / 3).dtype == ddpgrad.float64
    finally:
        ddpgrad.set_default_dtype(ddpgrad.float32)


def test_gradients_flow_back_in_each_inputs_dtype():
    a = ddpgrad.tensor([1.0, 2.0], dtype=ddpgrad.float32, requires_grad=True)
    b = ddpgrad.tensor([3.0, 4.0], dtype=ddpgrad.float64, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.dtype == ddpgrad.float32 and b.grad.dtype == ddpgrad.float64
    assert a.grad.tolist() == [3.0, 4.0] and b.grad.tolist() == [1.0, 2.0]
