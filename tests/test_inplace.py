"""In-place operators and ``op_`` methods: each scenario runs on PyTorch and on ddpgrad, same data.

Values, gradients and version counters must agree; where PyTorch raises, ddpgrad raises too.
"""

from __future__ import annotations

import numpy as np
import pytest

import ddpgrad
from op_helpers import TORCH_REASON

torch = pytest.importorskip("torch", reason=TORCH_REASON)


def _np(t):
    return None if t is None else np.asarray(t.detach().numpy(), dtype=np.float64)


def _leaf(lib, values):
    return lib.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def _run_both(scenario):
    results = []
    for lib in (torch, ddpgrad):
        out = scenario(lib)
        results.append([_np(t) if hasattr(t, "detach") else t for t in out])
    return results


def _assert_same(scenario):
    theirs, ours = _run_both(scenario)
    assert len(theirs) == len(ours)
    for k, (t, o) in enumerate(zip(theirs, ours)):
        if isinstance(t, np.ndarray):
            np.testing.assert_allclose(o, t, rtol=1e-12, atol=1e-12, err_msg=f"result {k}")
        else:
            assert o == t, f"result {k}: {o!r}, PyTorch {t!r}"


def _hand_written_sgd(lib):
    w = _leaf(lib, [0.5, -1.0, 2.0])
    x = lib.tensor(np.linspace(-1, 1, 3))
    versions = []
    for _ in range(3):
        loss = ((w * x - 1) ** 2).sum()
        loss.backward()
        with lib.no_grad():
            w -= 0.1 * w.grad
            w.grad.zero_()
        versions.append(w._version)
    return [w, w.grad, versions, w.is_leaf, w.requires_grad]


def _operators_on_a_plain_tensor(lib):
    a = lib.tensor(np.arange(6.0).reshape(2, 3))
    alias = a
    a += 1
    a *= lib.tensor([1.0, 2.0, 3.0])
    a -= 0.5
    a /= 2
    a **= 2
    a //= 1.5
    a %= 4
    b = lib.tensor(np.array([5, 7, 9]))
    b //= 2
    b *= 3
    return [a, alias is a, a._version, b, b._version]


def _methods_on_a_plain_tensor(lib):
    a = lib.tensor(np.linspace(-2, 2, 6))
    steps = [
        lambda: a.add_(1, alpha=2), lambda: a.sub_(lib.ones(6, dtype=lib.float64), alpha=0.5), lambda: a.mul_(3),
        lambda: a.div_(4), lambda: a.pow_(2), lambda: a.clamp_(0.1, 2.0), lambda: a.sqrt_(),
        lambda: a.exp_(), lambda: a.log_(), lambda: a.neg_(), lambda: a.abs_(), lambda: a.sin_(),
        lambda: a.tanh_(), lambda: a.sigmoid_(), lambda: a.reciprocal_(), lambda: a.floor_(),
        lambda: a.fill_(1.5), lambda: a.addcmul_(a, a, value=2), lambda: a.lerp_(lib.zeros(6, dtype=lib.float64), 0.25),
        lambda: a.copy_(lib.arange(6.0)), lambda: a.clamp_(max=3.5), lambda: a.masked_fill_(a > 2, -1.0),
    ]
    snapshots = []
    for step in steps:
        assert step() is a
        snapshots.append(a.clone())
    return snapshots + [a._version]


def _views_and_aliases_see_the_change(lib):
    base = lib.tensor(np.arange(12.0).reshape(3, 4))
    row, col, flat, tr = base[1], base[:, 2], base.view(-1), base.t()
    row.mul_(10)
    col += 100
    flat[0] = -1
    tr[3, 2] = -2
    scalar = base[0, 1]
    scalar.add_(0.5)
    return [base, row, col, flat, tr, base._version, row._version, scalar]


def _non_leaf_in_place_records_the_op(lib):
    w = _leaf(lib, [[1.0, -2.0], [3.0, 0.5]])
    v = _leaf(lib, [0.3, -0.7])
    h = w * 2
    h.add_(v)
    h.mul_(w)
    h -= v.exp()
    h /= 3
    h.sub_(w, alpha=0.5)
    h.sigmoid_()
    h.sum().backward()
    return [h, w.grad, v.grad, h.grad_fn is not None, h.is_leaf]


def _writing_through_a_view_of_a_non_leaf(lib):
    w = _leaf(lib, np.linspace(-1, 1, 12).reshape(3, 4))
    h = w * 3
    row = h[1]
    row.mul_(w[0])
    col = h[:, 1:3]
    col += 1
    t = h.t()
    t[0].exp_()
    (h * h).sum().backward()
    return [h, w.grad]


def _other_views_follow_a_rebased_base(lib):
    w = _leaf(lib, [1.0, 2.0, 3.0, 4.0])
    h = w * 1
    first, last = h[:2], h[2:]
    first.mul_(w[:2])
    (last * 5 + first).sum().backward()
    return [w.grad, last]


def _setitem_in_the_graph(lib):
    w = _leaf(lib, np.linspace(-1, 1, 6))
    v = _leaf(lib, [2.0, 3.0])
    h = w * w
    h[1:3] = v * 2
    h[0] = 7.0
    h[h > 0.5] = 0.0
    h[lib.tensor([4, 4])] = v[0]
    h.sum().backward()
    return [h, w.grad, v.grad]


def _copy_and_fill_in_the_graph(lib):
    w = _leaf(lib, [1.0, 2.0, 3.0])
    buf = lib.zeros(2, 3, dtype=lib.float64)
    buf.copy_(w * 2)
    buf[1].fill_(5.0)
    (buf * lib.tensor([[1.0], [2.0]], dtype=lib.float64)).sum().backward()
    return [buf, w.grad]


def _in_place_module_activation(lib):
    w = _leaf(lib, np.linspace(-1, 1, 6).reshape(2, 3))
    net = lib.nn.Sequential(lib.nn.Linear(3, 3).double(), lib.nn.LeakyReLU(0.2, inplace=True))
    with lib.no_grad():
        net[0].weight.copy_(lib.tensor(np.linspace(-1, 1, 9).reshape(3, 3)))
        net[0].bias.fill_(0.1)
    y = lib.nn.ReLU(inplace=True)(net(w - 0.2) * 3)
    (y * y).sum().backward()
    return [y, w.grad, net[0].weight.grad]


@pytest.mark.parametrize("scenario", [
    _hand_written_sgd, _operators_on_a_plain_tensor, _methods_on_a_plain_tensor,
    _views_and_aliases_see_the_change, _non_leaf_in_place_records_the_op,
    _writing_through_a_view_of_a_non_leaf, _other_views_follow_a_rebased_base, _setitem_in_the_graph,
    _copy_and_fill_in_the_graph, _in_place_module_activation,
], ids=lambda f: f.__name__.strip("_"))
def test_in_place_matches_torch(scenario):
    _assert_same(scenario)


def _raises_like_torch(scenario, match):
    with pytest.raises(RuntimeError):
        scenario(torch)
    with pytest.raises(RuntimeError, match=match):
        scenario(ddpgrad)


def test_in_place_on_a_leaf_that_requires_grad_raises():
    _raises_like_torch(lambda lib: _leaf(lib, [1.0]).add_(1), "a leaf Variable that requires grad")

    def augmented(lib):
        w = _leaf(lib, [1.0])
        w -= 0.1

    _raises_like_torch(augmented, "a leaf Variable that requires grad")


def test_in_place_on_a_view_of_a_leaf_raises():
    _raises_like_torch(lambda lib: _leaf(lib, [1.0, 2.0])[0].mul_(2), "view of a leaf Variable")


def test_in_place_result_that_does_not_fit_the_dtype_raises():
    _raises_like_torch(lambda lib: lib.tensor([1, 2]).div_(2), "can't be cast to the desired output type")
    _raises_like_torch(lambda lib: lib.tensor([1, 2]).add_(0.5), "can't be cast")
    _raises_like_torch(lambda lib: lib.tensor([1, 2]).exp_(), "can't be cast")


def test_in_place_result_that_does_not_fit_the_shape_raises():
    _raises_like_torch(lambda lib: lib.zeros(3).add_(lib.ones(2, 3)), "doesn't match the broadcast shape")


def test_modifying_a_saved_tensor_in_place_makes_backward_raise():
    def scenario(lib):
        w = _leaf(lib, [1.0, 2.0])
        h = w * 1
        y = h * h
        h.add_(1)
        y.sum().backward()

    _raises_like_torch(scenario, "modified by an in-place operation")


def test_matmul_assignment_rebinds_as_in_torch():
    theirs, ours = _run_both(lambda lib: _matmul_assign(lib))
    assert theirs[-1] == ours[-1] is False
    np.testing.assert_allclose(ours[0], theirs[0])


def _matmul_assign(lib):
    a = lib.ones(2, 2, dtype=lib.float64)
    original = a
    a @= lib.eye(2, dtype=lib.float64) * 2
    return [a, a is original]


def test_editing_a_masked_copy_does_not_disturb_the_original():
    for lib in (torch, ddpgrad):
        w = _leaf(lib, [1.0, -2.0, 3.0])
        y = w * 2
        picked = y[y > 0]
        picked.mul_(0)
        y.sum().backward()
        assert w.grad.tolist() == [2.0, 2.0, 2.0]
        assert y._version == 0


def _args(lib, name):
    """Extra arguments of ``name`` for an input of shape (2, 3) in (0.2, 0.8)."""
    other = lib.tensor(np.linspace(0.3, 0.9, 6).reshape(2, 3))
    table = {
        "pow": (2.0,), "clamp": (0.3, 0.6), "clip": (0.3, 0.6), "floor_divide": (0.25,), "remainder": (0.25,),
        "fmod": (0.25,), "masked_fill": (other > 0.5, 0.0), "atan2": (other,), "clamp_min": (0.4,),
        "clamp_max": (0.4,), "lerp": (other, 0.3), "addcmul": (other, other), "addcdiv": (other, other),
        "hypot": (other,), "xlogy": (other,), "multiply": (other,), "subtract": (other,), "divide": (other,),
        "true_divide": (other,), "addmm": (other, lib.tensor(np.eye(3))), "hardtanh": (0.3, 0.6),
        "leaky_relu": (0.1,), "elu": (), "heaviside": (other,),
        "scatter": (1, lib.tensor([[0, 1], [2, 0]]), other[:, :2]),
        "scatter_add": (1, lib.tensor([[0, 1], [2, 0]]), other[:, :2]),
        "index_add": (1, lib.tensor([2, 0]), other[:, :2]), "index_fill": (1, lib.tensor([1]), -1.0),
        "cumsum": (1,), "cumprod": (1,),
    }
    return table.get(name, ())


_TORCH_INPLACE = [n for n in ddpgrad.ops.methods.INPLACE
                  if hasattr(torch.Tensor, n + "_") and n not in ("logical_and", "logical_or", "logical_xor",
                                                                  "logical_not", "bitwise_and", "bitwise_or",
                                                                  "bitwise_xor", "bitwise_not", "nan_to_num")]


# PyTorch has no derivative for these in-place forms (ddpgrad records them; out of the graph they must agree)
_NO_TORCH_DERIVATIVE = {"floor_divide", "asinh", "acosh", "atanh", "sgn", "heaviside"}


@pytest.mark.parametrize("name", _TORCH_INPLACE)
def test_every_in_place_method_matches_torch_in_and_out_of_the_graph(name):
    def scenario(lib):
        base = lib.tensor(np.linspace(0.2, 0.8, 6).reshape(2, 3))
        plain = base.clone()
        returned = getattr(plain, name + "_")(*_args(lib, name))
        if name in _NO_TORCH_DERIVATIVE:
            return [plain, returned is plain, plain._version]
        w = lib.tensor(np.linspace(0.2, 0.8, 6).reshape(2, 3), requires_grad=True)
        h = w * 1
        getattr(h, name + "_")(*_args(lib, name))
        (h * lib.tensor(np.arange(1.0, 7.0).reshape(2, 3))).sum().backward()
        return [plain, returned is plain, plain._version, h, w.grad]

    _assert_same(scenario)


@pytest.mark.parametrize("name", sorted(_NO_TORCH_DERIVATIVE - {"floor_divide", "heaviside"}))  # those two: no gradient
def test_in_place_forms_without_a_torch_derivative_match_their_out_of_place_op(name):
    grads = []
    for in_place in (True, False):
        w = ddpgrad.tensor(np.linspace(1.2, 1.8, 6).reshape(2, 3) / (2 if name == "atanh" else 1),
                           requires_grad=True)
        h = w * 1
        h = getattr(h, name + "_")(*_args(ddpgrad, name)) if in_place else getattr(ddpgrad, name)(h, *_args(ddpgrad, name))
        (h * ddpgrad.tensor(np.arange(1.0, 7.0).reshape(2, 3))).sum().backward()
        grads.append(w.grad.numpy().copy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)
    assert np.isfinite(grads[0]).all()


def test_in_place_op_without_a_gradient_on_a_tensor_that_requires_grad_raises():
    # PyTorch raises at backward, ddpgrad already at the op
    def floor_divide(lib):
        (_leaf(lib, [1.5, 2.5]) * 1).floor_divide_(2).sum().backward()

    def heaviside(lib):
        (_leaf(lib, [1.5, 2.5]) * 1).heaviside_(lib.tensor([0.5, 0.5], dtype=lib.float64)).sum().backward()

    for scenario in (floor_divide, heaviside):
        _raises_like_torch(scenario, "derivative for this op is not implemented")


def test_shape_changing_in_place_methods_follow_torchs_leaf_rules():
    _raises_like_torch(lambda lib: _leaf(lib, [1.0, 2.0]).unsqueeze_(0), "a leaf Variable that requires grad")

    def under_no_grad(lib):
        w = _leaf(lib, [1.0, 2.0])
        with lib.no_grad():
            w.unsqueeze_(0)
        (w * 2).sum().backward()
        return [w, w.is_leaf, w.grad]

    _assert_same(under_no_grad)
