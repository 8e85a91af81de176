"""Every differentiable op against PyTorch (forward and backward, float64) and finite differences."""

from __future__ import annotations

import operator

import numpy as np
import pytest

import ddpgrad
from ddpgrad.autograd import Function
from ddpgrad.autograd.gradcheck import GradcheckError
from op_helpers import LAYOUTS, TORCH_REASON, assert_matches_torch, helper_test_op

torch = pytest.importorskip("torch", reason=TORCH_REASON)
F = torch.nn.functional


# ------------------------------------------------------------------ the helper can fail
class _WrongSquare(Function):
    """x**2 with a wrong backward (3x instead of 2x): a bug the checks below must catch."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x


def test_helper_fails_on_a_wrong_forward():
    with pytest.raises(AssertionError, match="output 0"):
        helper_test_op([(3, 4)], lambda x: x * 2, lambda x: x * 2.0000001)


def test_helper_fails_on_a_wrong_backward():
    with pytest.raises(AssertionError, match="gradient of input 0"):
        helper_test_op([(3, 4)], lambda x: x * x, _WrongSquare.apply)


def test_helper_fails_on_a_wrong_dtype():
    with pytest.raises(AssertionError, match="dtype"):
        helper_test_op([(3,)], lambda x: x * 2, lambda x: (x * 2).float())


def test_gradcheck_alone_catches_a_wrong_backward():
    x = ddpgrad.randn(2, 3, dtype=ddpgrad.float64, requires_grad=True)
    with pytest.raises(GradcheckError):
        ddpgrad.autograd.gradcheck(_WrongSquare.apply, [x])


# ------------------------------------------------------------------ binary arithmetic
BINARY = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "pow": operator.pow,
}
# division and non-integer powers need the second (resp. first) operand away from 0 / positive
BINARY_RANGES = {
    "add": ((-2, -2), (2, 2)),
    "sub": ((-2, -2), (2, 2)),
    "mul": ((-2, -2), (2, 2)),
    "div": ((-2, 0.5), (2, 2)),
    "pow": ((0.5, -2), (2, 2)),
}
BROADCAST_PAIRS = [
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),
    ((4,), (3, 4)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (3, 1)),
    ((1,), (5,)),
    ((5, 1, 1), (1,)),
    ((), (3, 4)),
    ((3, 4), ()),
    ((), ()),
    ((0, 4), (1, 4)),
    ((2, 0, 3), (3,)),
]


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary_op_broadcasting(name, shapes):
    (lo_a, lo_b), (hi_a, hi_b) = BINARY_RANGES[name]
    helper_test_op(shapes, BINARY[name], low=(lo_a, lo_b), high=(hi_a, hi_b))


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("name", BINARY)
def test_binary_op_non_contiguous(name, layout):
    (lo_a, lo_b), (hi_a, hi_b) = BINARY_RANGES[name]
    helper_test_op([(3, 4), (3, 4)], BINARY[name], low=(lo_a, lo_b), high=(hi_a, hi_b), layout=layout)
    helper_test_op([(4, 3), (3,)], BINARY[name], low=(lo_a, lo_b), high=(hi_a, hi_b), layout=layout)


SCALAR_CASES = {
    "x+2.5": lambda x: x + 2.5,
    "2.5+x": lambda x: 2.5 + x,
    "x+2": lambda x: x + 2,
    "x-1.5": lambda x: x - 1.5,
    "1.5-x": lambda x: 1.5 - x,
    "x*-3": lambda x: x * -3,
    "0.5*x": lambda x: 0.5 * x,
    "x/4": lambda x: x / 4,
    "3/x": lambda x: 3 / x,
    "x**2": lambda x: x**2,
    "x**3": lambda x: x**3,
    "x**0.5": lambda x: x**0.5,
    "x**-1.5": lambda x: x**-1.5,
    "x**0": lambda x: x**0,
    "x**1": lambda x: x**1,
    "2**x": lambda x: 2**x,
    "1.5**x": lambda x: 1.5**x,
    "-x": lambda x: -x,
    "+x": lambda x: +x,
    "x*np.float64": lambda x: x * np.float64(1.5),
    "np.float64*x": lambda x: np.float64(1.5) * x,
    "x+np.int64": lambda x: x + np.int64(3),
    "np.float32-x": lambda x: np.float32(0.25) - x,
    "x/np.float64": lambda x: x / np.float64(2.0),
}


@pytest.mark.parametrize("shape", [(3, 4), (), (0,)], ids=str)
@pytest.mark.parametrize("case", SCALAR_CASES)
def test_python_and_numpy_scalars_on_either_side(case, shape):
    helper_test_op([shape], SCALAR_CASES[case], low=0.5, high=2.0)


@pytest.mark.parametrize("case", SCALAR_CASES)
def test_float32_stays_float32_with_scalars(case):
    fn = SCALAR_CASES[case]
    x = np.linspace(0.5, 2, 6, dtype=np.float32).reshape(2, 3)
    theirs_x = torch.tensor(x, requires_grad=True)
    ours_x = ddpgrad.tensor(x, requires_grad=True)
    theirs, ours = fn(theirs_x), fn(ours_x)
    assert ours.dtype == ddpgrad.float32 and theirs.dtype == torch.float32
    assert_matches_torch(ours, theirs, rtol=1e-6, atol=1e-6)
    theirs.sum().backward()
    ours.sum().backward()
    assert ours_x.grad.dtype == ddpgrad.float32
    assert_matches_torch(ours_x.grad, theirs_x.grad, rtol=1e-5, atol=1e-6)


def test_pow_with_a_tensor_exponent_of_zero_at_zero_base():
    # d(a**b)/da is 0 where b == 0 even for a == 0 (not 0 * inf = nan); d/db is 0 at a == 0, b >= 0
    helper_test_op(None, lambda a, b: a**b,
                   arrays=[np.array([0.0, 0.0, 2.0, 0.0]), np.array([0.0, 2.0, 0.0, 1.0])],
                   check_gradcheck=False)


@pytest.mark.filterwarnings("ignore")  # nan/inf by design, as in PyTorch
def test_division_by_zero_matches_torch():
    helper_test_op(None, lambda a, b: a / b, arrays=[np.array([1.0, -1.0, 0.0]), np.zeros(3)],
                   check_gradcheck=False)


# ------------------------------------------------------------------ matmul
MATMUL_SHAPES = [
    ((3,), (3,)),
    ((2, 3), (3,)),
    ((3,), (3, 4)),
    ((2, 3), (3, 4)),
    ((5, 2, 3), (5, 3, 4)),
    ((5, 2, 3), (3, 4)),
    ((2, 3), (5, 3, 4)),
    ((3,), (5, 3, 4)),
    ((5, 2, 3), (3,)),
    ((2, 1, 2, 3), (5, 3, 4)),
    ((0, 3), (3, 4)),
    ((2, 0), (0, 3)),
    ((2, 3), (3, 0)),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(shapes, layout):
    helper_test_op(shapes, operator.matmul, layout=layout)


def test_matmul_function_and_methods():
    helper_test_op([(2, 3), (3, 4)], torch.matmul, ddpgrad.matmul)
    helper_test_op([(2, 3), (3, 4)], lambda a, b: a.mm(b))
    helper_test_op([(5, 2, 3), (5, 3, 4)], torch.bmm, ddpgrad.bmm)


def test_matmul_with_a_numpy_array_on_the_left():
    x = np.arange(6.0).reshape(2, 3)
    w = ddpgrad.ones(3, 2, dtype=ddpgrad.float64, requires_grad=True)
    out = x @ w  # NumPy defers to Tensor.__rmatmul__
    assert isinstance(out, ddpgrad.Tensor)
    out.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), x.sum(0)[:, None].repeat(2, 1))


@pytest.mark.parametrize("shapes", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)), ((2, 3, 4), (3, 5, 6))],
                         ids=str)
def test_matmul_shape_mismatch_names_both_shapes(shapes):
    a, b = (ddpgrad.ones(*s) for s in shapes)
    with pytest.raises(RuntimeError) as info:
        a @ b
    assert str(tuple(shapes[0])) in str(info.value) and str(tuple(shapes[1])) in str(info.value)


def test_matmul_of_a_0d_tensor_is_an_error():
    with pytest.raises(RuntimeError, match="at least 1 dimension"):
        ddpgrad.tensor(2.0) @ ddpgrad.ones(2)


# ------------------------------------------------------------------ unary elementwise
UNARY = {
    "exp": (torch.exp, ddpgrad.exp, -2, 2),
    "log": (torch.log, ddpgrad.log, 0.1, 3),
    "sqrt": (torch.sqrt, ddpgrad.sqrt, 0.1, 3),
    "abs": (torch.abs, ddpgrad.abs, -2, 2),
    "tanh": (torch.tanh, ddpgrad.tanh, -3, 3),
    "sigmoid": (torch.sigmoid, ddpgrad.sigmoid, -6, 6),
    "relu": (torch.relu, ddpgrad.relu, -2, 2),
    "gelu": (F.gelu, ddpgrad.gelu, -3, 3),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: ddpgrad.gelu(x, approximate="tanh"), -3, 3),
    "neg": (torch.neg, ddpgrad.neg, -2, 2),
    "clamp_min": (lambda x: x.clamp(min=-0.5), lambda x: x.clamp(min=-0.5), -2, 2),
    "clamp_max": (lambda x: x.clamp(max=0.5), lambda x: x.clamp(max=0.5), -2, 2),
    "clamp_both": (lambda x: torch.clamp(x, -0.5, 0.5), lambda x: ddpgrad.clamp(x, -0.5, 0.5), -2, 2),
    "clip_int_bounds": (lambda x: torch.clip(x, -1, 1), lambda x: ddpgrad.clip(x, -1, 1), -2, 2),
    "square": (torch.square, lambda x: x.square(), -2, 2),
    "method_exp": (lambda x: x.exp(), lambda x: x.exp(), -2, 2),
    "method_abs": (lambda x: abs(x), lambda x: abs(x), -2, 2),
}


@pytest.mark.parametrize("shape", [(3, 4), (), (0, 3), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("name", UNARY)
def test_unary_op(name, shape):
    torch_fn, our_fn, lo, hi = UNARY[name]
    helper_test_op([shape], torch_fn, our_fn, low=lo, high=hi)


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("name", UNARY)
def test_unary_op_non_contiguous(name, layout):
    torch_fn, our_fn, lo, hi = UNARY[name]
    helper_test_op([(3, 4)], torch_fn, our_fn, low=lo, high=hi, layout=layout)


@pytest.mark.parametrize("name", UNARY)
def test_unary_op_keeps_float32(name):
    torch_fn, our_fn, lo, hi = UNARY[name]
    x = np.linspace(lo, hi, 12, dtype=np.float32).reshape(3, 4)
    theirs_x, ours_x = torch.tensor(x, requires_grad=True), ddpgrad.tensor(x, requires_grad=True)
    theirs, ours = torch_fn(theirs_x), our_fn(ours_x)
    assert_matches_torch(ours, theirs, rtol=1e-5, atol=1e-6)
    theirs.sum().backward()
    ours.sum().backward()
    assert_matches_torch(ours_x.grad, theirs_x.grad, rtol=1e-5, atol=1e-6)


FLOAT32_REDUCTIONS = {
    "sum": lambda x: x.sum(1), "mean": lambda x: x.mean(), "var": lambda x: x.var(0), "std": lambda x: x.std(1),
    "max": lambda x: x.max(), "max_dim": lambda x: x.max(1)[0], "amin": lambda x: x.amin(0),
    "logsumexp": lambda x: x.logsumexp(1), "softmax": lambda x: x.softmax(1), "log_softmax": lambda x: x.log_softmax(0),
    "matmul": lambda x: x @ x.T, "index": lambda x: x[[0, 0, 2]], "cat": lambda x: torch_or_ours(x).cat([x, x]),
    "maximum": lambda x: torch_or_ours(x).maximum(x, x.T[:3, :1]), "where": lambda x: torch_or_ours(x).where(x > 0, x, 0.5),
}


def torch_or_ours(x):
    return torch if isinstance(x, torch.Tensor) else ddpgrad


@pytest.mark.parametrize("name", FLOAT32_REDUCTIONS)
def test_reductions_and_joins_keep_float32(name):
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    theirs_x, ours_x = torch.tensor(x, requires_grad=True), ddpgrad.tensor(x, requires_grad=True)
    theirs, ours = FLOAT32_REDUCTIONS[name](theirs_x), FLOAT32_REDUCTIONS[name](ours_x)
    assert_matches_torch(ours, theirs, rtol=1e-5, atol=1e-6)
    theirs.sum().backward()
    ours.sum().backward()
    assert_matches_torch(ours_x.grad, theirs_x.grad, rtol=1e-5, atol=1e-6)


def test_unary_ops_at_their_kinks_match_torch():
    x = np.array([-1.0, 0.0, 0.0, 1.0, -0.5, 0.5])
    for fn in (torch.abs, torch.relu, lambda t: t.clamp(-0.5, 0.5), lambda t: t.clamp(min=0.0),
               lambda t: t.clamp(max=0.0), torch.sqrt):
        ours = {torch.abs: ddpgrad.abs, torch.relu: ddpgrad.relu, torch.sqrt: ddpgrad.sqrt}.get(fn, fn)
        helper_test_op(None, fn, ours, arrays=[np.abs(x) if fn is torch.sqrt else x],
                       check_gradcheck=False)


def test_sigmoid_does_not_overflow():
    helper_test_op(None, torch.sigmoid, ddpgrad.sigmoid, arrays=[np.array([-800.0, -50.0, 0.0, 50.0, 800.0])],
                   check_gradcheck=False)


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1)), ((3, 4), (), ())],
                         ids=str)
def test_clamp_with_tensor_bounds(shapes):
    helper_test_op(shapes, lambda x, lo, hi: torch.clamp(x, lo, hi), lambda x, lo, hi: ddpgrad.clamp(x, lo, hi),
                   low=(-2, -1.5, 0.5), high=(2, -0.5, 1.5))
    helper_test_op(shapes[:2], lambda x, lo: torch.clamp(x, min=lo), lambda x, lo: x.clamp(min=lo),
                   low=(-2, -1), high=(2, 1))
    helper_test_op(shapes[:2], lambda x, hi: torch.clamp(x, max=hi), lambda x, hi: x.clamp(max=hi),
                   low=(-2, -1), high=(2, 1))


def test_clamp_with_tensor_bounds_ties_and_crossed_bounds():
    # x touching a bound keeps the gradient; with lo > hi the result (and the gradient) is hi's
    x = np.array([-1.0, 0.0, 1.0, 2.0, 0.5])
    lo = np.array([-1.0, -1.0, 0.0, 0.0, 1.0])
    hi = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    helper_test_op(None, torch.clamp, ddpgrad.clamp, arrays=[x, lo, hi], check_gradcheck=False)


def test_clamp_needs_a_bound():
    with pytest.raises(RuntimeError, match="min.*max"):
        ddpgrad.clamp(ddpgrad.ones(2))


# ------------------------------------------------------------------ maximum, minimum, where
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((), (2, 3)), ((0, 2), (1, 2))], ids=str)
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum(name, shapes):
    helper_test_op(shapes, getattr(torch, name), getattr(ddpgrad, name))


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_split_ties_evenly(name):
    a = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    b = np.array([[1.0, 0.0, 3.0], [0.0, 4.0, 5.0]])
    helper_test_op(None, getattr(torch, name), getattr(ddpgrad, name), arrays=[a, b], check_gradcheck=False)
    helper_test_op(None, getattr(torch, name), getattr(ddpgrad, name), arrays=[a, np.array(1.0)],
                   check_gradcheck=False)


def test_max_min_of_two_tensors_are_elementwise():
    helper_test_op([(3, 4), (3, 4)], torch.max, ddpgrad.max)
    helper_test_op([(3, 4), (4,)], torch.min, ddpgrad.min)


_COND = np.array([[True, False, True, False], [False, False, True, True], [True, True, False, False]])


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((1, 4), (3, 1)), ((), (3, 4))], ids=str)
def test_where(shapes):
    helper_test_op(shapes, lambda a, b: torch.where(torch.from_numpy(_COND), a, b),
                   lambda a, b: ddpgrad.where(ddpgrad.from_numpy(_COND), a, b))


def test_where_with_scalars_and_methods():
    cond_t, cond_d = torch.from_numpy(_COND), ddpgrad.from_numpy(_COND)
    helper_test_op([(3, 4)], lambda a: torch.where(cond_t, a, 0.0), lambda a: ddpgrad.where(cond_d, a, 0.0))
    helper_test_op([(3, 4)], lambda a: torch.where(cond_t, 2.5, a), lambda a: ddpgrad.where(cond_d, 2.5, a))
    helper_test_op([(3, 4)], lambda a: a.where(cond_t, -a), lambda a: a.where(cond_d, -a))
    helper_test_op([(3, 4)], lambda a: a.masked_fill(cond_t, 0.5), lambda a: a.masked_fill(cond_d, 0.5))
    helper_test_op([(3, 4)], lambda a: torch.where(a > 0, a, a * 0.1), lambda a: ddpgrad.where(a > 0, a, a * 0.1))


def test_where_of_two_numbers_has_torch_dtype():
    assert_matches_torch(ddpgrad.where(ddpgrad.from_numpy(_COND), 1.0, 0.0),
                         torch.where(torch.from_numpy(_COND), 1.0, 0.0))
    assert_matches_torch(ddpgrad.where(ddpgrad.from_numpy(_COND), 1, 0),
                         torch.where(torch.from_numpy(_COND), 1, 0))


# ------------------------------------------------------------------ reductions
REDUCE_DIMS = [
    {}, {"dim": 0}, {"dim": -1}, {"dim": 1, "keepdim": True}, {"dim": (0, 2)},
    {"dim": (0, -1), "keepdim": True}, {"dim": (2, 0, 1)},
]


@pytest.mark.parametrize("kw", REDUCE_DIMS, ids=str)
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_sum_mean(name, kw):
    helper_test_op([(2, 3, 4)], lambda x: getattr(x, name)(**kw))
    helper_test_op([(2, 3, 4)], lambda x: getattr(torch, name)(x, **kw), lambda x: getattr(ddpgrad, name)(x, **kw),
                   layout="transposed")


@pytest.mark.filterwarnings("ignore")  # var/std of one element: nan by design, as in PyTorch
@pytest.mark.parametrize("name", ["sum", "mean", "var", "std"])
def test_reductions_of_0d_and_empty(name):
    helper_test_op([()], lambda x: getattr(x, name)(), check_gradcheck=name in ("sum", "mean"))
    helper_test_op([()], lambda x: getattr(x, name)(0), check_gradcheck=name in ("sum", "mean"))
    helper_test_op([(2, 0)], lambda x: getattr(x, name)(0))
    if name == "sum":
        helper_test_op([(0, 3)], lambda x: x.sum())
        helper_test_op([(0, 3)], lambda x: x.sum(0))


@pytest.mark.parametrize("kw", [
    {}, {"dim": 0}, {"dim": -1, "keepdim": True}, {"dim": (0, 2)}, {"dim": 1, "correction": 0},
    {"dim": 1, "correction": 2}, {"dim": 1, "unbiased": False}, {"dim": (1, 2), "unbiased": True, "keepdim": True},
    {"correction": 0},
], ids=str)
@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std(name, kw):
    helper_test_op([(3, 4, 5)], lambda x: getattr(x, name)(**kw))
    helper_test_op([(3, 4, 5)], lambda x: getattr(torch, name)(x, **kw), lambda x: getattr(ddpgrad, name)(x, **kw),
                   layout="strided")


def test_var_std_positional_unbiased_flag():
    helper_test_op([(3, 4)], lambda x: x.var(False))
    helper_test_op([(3, 4)], lambda x: x.std(True))


def test_std_of_a_constant_slice_has_zero_gradient():
    helper_test_op(None, lambda x: x.std(1), arrays=[np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 4.0]])],
                   check_gradcheck=False)


_TIES = np.array([[1.0, 3.0, 3.0, -1.0], [2.0, 2.0, -5.0, -5.0], [0.5, 0.5, 0.5, 0.5]])


@pytest.mark.parametrize("name", ["max", "min"])
def test_full_max_min_share_the_gradient_among_ties(name):
    helper_test_op([(3, 4)], lambda x: getattr(x, name)())
    helper_test_op(None, lambda x: getattr(x, name)(), arrays=[_TIES], check_gradcheck=False)
    helper_test_op(None, lambda x: getattr(torch, name)(x), lambda x: getattr(ddpgrad, name)(x),
                   arrays=[np.full((2, 2), 7.0)], check_gradcheck=False)
    helper_test_op([()], lambda x: getattr(x, name)())


@pytest.mark.parametrize("kw", [{"dim": 1}, {"dim": 0}, {"dim": -1, "keepdim": True}, {"dim": 0, "keepdim": True}],
                         ids=str)
@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_dim_give_values_and_indices(name, kw):
    helper_test_op([(3, 4)], lambda x: getattr(x, name)(**kw))
    helper_test_op([(3, 4)], lambda x: getattr(x, name)(**kw), layout="transposed")
    # ties: the first index wins and takes the whole gradient, as in PyTorch on the CPU
    helper_test_op(None, lambda x: getattr(x, name)(**kw), arrays=[_TIES], check_gradcheck=False)
    out = getattr(ddpgrad.tensor(_TIES), name)(**kw)
    assert out.values is out[0] and out.indices is out[1]
    assert out.indices.dtype == ddpgrad.int64 and not out.indices.requires_grad


def test_max_with_dim_on_an_empty_batch():
    helper_test_op([(0, 3)], lambda x: x.max(1))


@pytest.mark.parametrize("kw", [{}, {"dim": 0}, {"dim": -1}, {"dim": (0, 1)}, {"dim": 1, "keepdim": True}], ids=str)
@pytest.mark.parametrize("name", ["amax", "amin"])
def test_amax_amin(name, kw):
    helper_test_op([(3, 4)], lambda x: getattr(x, name)(**kw))
    helper_test_op(None, lambda x: getattr(torch, name)(x, **kw), lambda x: getattr(ddpgrad, name)(x, **kw),
                   arrays=[_TIES], check_gradcheck=False)


def test_max_of_an_empty_dim_is_an_error():
    with pytest.raises(RuntimeError, match="empty"):
        ddpgrad.zeros(0, 3).max()
    with pytest.raises(RuntimeError, match="empty"):
        ddpgrad.zeros(0, 3).amax(0)


@pytest.mark.parametrize("kw", [{"dim": 1}, {"dim": 0}, {"dim": -1, "keepdim": True}, {"dim": (0, 1)}], ids=str)
def test_logsumexp(kw):
    helper_test_op([(3, 4)], lambda x: torch.logsumexp(x, **kw), lambda x: ddpgrad.logsumexp(x, **kw))
    helper_test_op([(3, 4)], lambda x: x.logsumexp(**kw), low=300, high=400)  # stable for large values


def test_logsumexp_of_empty_and_infinite_rows():
    helper_test_op([(3, 0)], lambda x: torch.logsumexp(x, 1), lambda x: ddpgrad.logsumexp(x, 1))
    helper_test_op(None, lambda x: torch.logsumexp(x, 1), lambda x: ddpgrad.logsumexp(x, 1),
                   arrays=[np.array([[-np.inf, 0.0], [1.0, 2.0]])], check_gradcheck=False)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_log_softmax(name, dim):
    helper_test_op([(3, 4)], lambda x: getattr(torch, name)(x, dim), lambda x: getattr(ddpgrad, name)(x, dim))
    helper_test_op([(2, 3, 4)], lambda x: getattr(x, name)(dim), layout="transposed")
    helper_test_op([(2, 5)], lambda x: getattr(x, name)(dim), low=500, high=900)  # no overflow
    helper_test_op([(3, 0)], lambda x: getattr(x, name)(dim))
    helper_test_op([(0, 3)], lambda x: getattr(x, name)(dim))


def test_softmax_dtype_argument():
    x32 = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    ours = ddpgrad.softmax(ddpgrad.tensor(x32), 1, dtype=ddpgrad.float64)
    assert_matches_torch(ours, torch.softmax(torch.tensor(x32), 1, dtype=torch.float64))


# ------------------------------------------------------------------ shapes
SHAPE_OPS = {
    "reshape": lambda x: x.reshape(4, 6),
    "reshape_tuple": lambda x: x.reshape((2, -1)),
    "view": lambda x: x.view(-1),
    "view_as": lambda x: x.view(6, 4).view_as(x.view(4, 6).T),
    "flatten": lambda x: x.flatten(),
    "flatten_1": lambda x: x.flatten(1),
    "flatten_0_1": lambda x: x.flatten(0, 1),
    "flatten_neg": lambda x: x.flatten(-2, -1),
    "transpose": lambda x: x.transpose(0, 2),
    "transpose_neg": lambda x: x.transpose(-1, -2),
    "permute": lambda x: x.permute(2, 0, 1),
    "permute_tuple": lambda x: x.permute((1, 2, 0)),
    "permute_neg": lambda x: x.permute(-1, 0, 1),
    "squeeze_none": lambda x: x.reshape(2, 1, 3, 4, 1).squeeze(),
    "squeeze_dim": lambda x: x.reshape(2, 1, 3, 4, 1).squeeze(1),
    "squeeze_neg": lambda x: x.reshape(2, 1, 3, 4, 1).squeeze(-1),
    "squeeze_non1": lambda x: x.squeeze(0),
    "unsqueeze": lambda x: x.unsqueeze(1),
    "unsqueeze_neg": lambda x: x.unsqueeze(-1),
    "unsqueeze_0": lambda x: x.unsqueeze(0),
    "expand": lambda x: x[:, :1, :].expand(2, 5, 4),
    "expand_new": lambda x: x.expand(3, 2, 3, 4),
    "expand_minus1": lambda x: x[:1].expand(5, -1, -1),
    "expand_as": lambda x: x[:, :1].expand_as(x),
    "T_2d": lambda x: x[0].T,
    "mT": lambda x: x.mT,
    "t": lambda x: x[0].t(),
    "chain": lambda x: x.permute(1, 0, 2).reshape(3, 8).T.unsqueeze(0).flatten(0, 1),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op(name, layout):
    if name in ("view", "view_as", "chain") and layout != "contiguous":
        pytest.skip("torch.view needs contiguous input")
    helper_test_op([(2, 3, 4)], SHAPE_OPS[name], layout=layout)


@pytest.mark.filterwarnings("ignore")  # nan/inf by design, as in PyTorch
def test_shape_ops_on_0d_and_empty():
    helper_test_op([()], lambda x: x.reshape(1, 1))
    helper_test_op([()], lambda x: x.unsqueeze(0))
    helper_test_op([()], lambda x: x.flatten())
    helper_test_op([()], lambda x: x.T)
    helper_test_op([()], lambda x: x.expand(2, 3))
    helper_test_op([(0, 3)], lambda x: x.T.reshape(3, 0, 1).squeeze(-1))
    helper_test_op([(2, 0, 3)], lambda x: x.permute(2, 0, 1).flatten())


def test_functional_shape_forms():
    helper_test_op([(2, 3, 4)], lambda x: torch.reshape(x, (4, 6)), lambda x: ddpgrad.reshape(x, (4, 6)))
    helper_test_op([(2, 3, 4)], lambda x: torch.flatten(x, 1), lambda x: ddpgrad.flatten(x, 1))
    helper_test_op([(2, 3, 4)], lambda x: torch.transpose(x, 0, 1), lambda x: ddpgrad.transpose(x, 0, 1))
    helper_test_op([(2, 3, 4)], lambda x: torch.permute(x, (2, 1, 0)), lambda x: ddpgrad.permute(x, (2, 1, 0)))
    helper_test_op([(2, 1, 4)], lambda x: torch.squeeze(x, 1), lambda x: ddpgrad.squeeze(x, 1))
    helper_test_op([(2, 3)], lambda x: torch.unsqueeze(x, 2), lambda x: ddpgrad.unsqueeze(x, 2))
    helper_test_op([(3, 1)], lambda x: torch.broadcast_to(x, (2, 3, 4)), lambda x: ddpgrad.broadcast_to(x, (2, 3, 4)))


@pytest.mark.parametrize("call", [
    lambda x: x.transpose(0, 2), lambda x: x.permute(0, 1, 2), lambda x: x.squeeze(2), lambda x: x.unsqueeze(3),
    lambda x: x.unsqueeze(-4), lambda x: x.flatten(0, 2), lambda x: x.max(2), lambda x: x.sum(2),
    lambda x: ddpgrad.cat([x, x], 2), lambda x: ddpgrad.stack([x, x], 3), lambda x: x.softmax(2),
])
def test_dimension_out_of_range_is_an_index_error(call):
    x = ddpgrad.ones(2, 3)
    with pytest.raises(IndexError):
        call(x)


def test_bad_reshape_and_expand_errors():
    x = ddpgrad.ones(2, 3)
    with pytest.raises(RuntimeError, match=r"\[4, 2\].*size 6"):
        x.reshape(4, 2)
    with pytest.raises(RuntimeError, match="expand"):
        x.expand(4, 3)
    with pytest.raises(RuntimeError, match="-1.*leading"):
        x.expand(-1, 2, 3)
    with pytest.raises(RuntimeError, match="permutation"):
        x.permute(0, 0)
    with pytest.raises(RuntimeError, match="t\\(\\)"):
        ddpgrad.ones(2, 3, 4).t()


CAT_CASES = [
    ([(2, 3), (4, 3)], 0),
    ([(2, 3), (2, 1), (2, 5)], 1),
    ([(2, 3), (2, 3)], -1),
    ([(2, 3, 4), (2, 1, 4)], -2),
    ([(0, 3), (2, 3)], 0),
    ([(3,), (2,), (1,)], 0),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shapes,dim", CAT_CASES, ids=str)
def test_cat(shapes, dim, layout):
    helper_test_op(shapes, lambda *xs: torch.cat(xs, dim), lambda *xs: ddpgrad.cat(xs, dim), layout=layout)


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_stack(dim):
    helper_test_op([(2, 3), (2, 3), (2, 3)], lambda *xs: torch.stack(xs, dim), lambda *xs: ddpgrad.stack(xs, dim))
    helper_test_op([(2, 3), (2, 3)], lambda *xs: torch.stack(xs, dim), lambda *xs: ddpgrad.stack(xs, dim),
                   layout="transposed")


def test_stack_of_0d_and_cat_with_a_constant():
    helper_test_op([(), (), ()], lambda *xs: torch.stack(xs), lambda *xs: ddpgrad.stack(xs))
    c_t, c_d = torch.ones(2, 3, dtype=torch.float64), ddpgrad.ones(2, 3, dtype=ddpgrad.float64)
    helper_test_op([(2, 3)], lambda x: torch.cat([c_t, x, c_t]), lambda x: ddpgrad.cat([c_d, x, c_d]))


def test_cat_stack_errors():
    with pytest.raises(RuntimeError, match="sizes"):
        ddpgrad.cat([ddpgrad.ones(2, 3), ddpgrad.ones(2, 4)])
    with pytest.raises(RuntimeError, match="equal size"):
        ddpgrad.stack([ddpgrad.ones(2, 3), ddpgrad.ones(2, 4)])
    with pytest.raises(RuntimeError, match="non-empty"):
        ddpgrad.cat([])


# ------------------------------------------------------------------ indexing
_ROW_MASK = np.array([True, False, True, True])
_IDX2D = np.array([[0, 3], [3, 3]])
INDEX_CASES = {
    "int": (lambda x: x[1], None),
    "neg_int": (lambda x: x[-1], None),
    "slice": (lambda x: x[1:3], None),
    "col": (lambda x: x[:, 1], None),
    "step": (lambda x: x[::2, 1::2], None),
    "ellipsis": (lambda x: x[..., 1], None),
    "none": (lambda x: x[None], None),
    "none_mid": (lambda x: x[:, None, 1:], None),
    "int_ellipsis_none": (lambda x: x[1, ..., None], None),
    "empty_slice": (lambda x: x[2:2], None),
    "neg_step": (lambda x: x.flip(0), lambda x: x[::-1]),
    "neg_step_2": (lambda x: x.flip(0)[::2], lambda x: x[::-2]),
    "neg_step_cols": (lambda x: x.flip(1)[1:], lambda x: x[1:, ::-1]),
    "bool_mask_from_x": (lambda x: x[x > 0.3], None),
    "bool_mask_rows_numpy": (lambda x: x[_ROW_MASK], None),
    "bool_mask_rows_tensor": (lambda x: x[torch.from_numpy(_ROW_MASK)], lambda x: x[ddpgrad.from_numpy(_ROW_MASK)]),
    "bool_mask_none_selected": (lambda x: x[x > 100], None),
    "int_list_repeated": (lambda x: x[[0, 0, 2, 0]], None),
    "int_list_negative": (lambda x: x[[-1, -1, 0]], None),
    "int_pair_repeated": (lambda x: x[[0, 0, 3], [1, 1, 2]], None),
    "cols_repeated": (lambda x: x[:, [2, 2, 0]], None),
    "int_array_2d_repeated": (lambda x: x[_IDX2D], None),
    "int_tensor_repeated": (lambda x: x[torch.tensor([3, 3, 1])], lambda x: x[ddpgrad.tensor([3, 3, 1])]),
    "int_0d_tensor": (lambda x: x[torch.tensor(2)], lambda x: x[ddpgrad.tensor(2)]),
    "int_list_and_slice": (lambda x: x[[1, 1], 1:], None),
    "empty_int_list": (lambda x: x[torch.tensor([], dtype=torch.int64)],
                       lambda x: x[ddpgrad.tensor([], dtype=ddpgrad.int64)]),
    "iterate": (lambda x: torch.stack(list(x)), lambda x: ddpgrad.stack(list(x))),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", INDEX_CASES)
def test_indexing(name, layout):
    torch_fn, our_fn = INDEX_CASES[name]
    helper_test_op([(4, 3)], torch_fn, our_fn, layout=layout)


def test_indexing_3d_and_0d():
    helper_test_op([(2, 3, 4)], lambda x: x[:, [0, 0, 2], 1:3])
    helper_test_op([(2, 3, 4)], lambda x: x[[1, 1], :, [3, 3]])
    helper_test_op([(2, 3, 4)], lambda x: x[..., [0, 0]])
    helper_test_op([(2, 3, 4)], lambda x: x[x.sum(-1) > 0])
    helper_test_op([()], lambda x: x[None])
    helper_test_op([()], lambda x: x[...])


def test_repeated_index_gradients_are_summed_not_overwritten():
    x = ddpgrad.zeros(3, dtype=ddpgrad.float64, requires_grad=True)
    x[[1, 1, 1, 2]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 3.0, 1.0])


def test_index_out_of_range_error_names_the_shape():
    with pytest.raises(IndexError, match=r"\[4, 3\]"):
        ddpgrad.ones(4, 3)[5]


# ------------------------------------------------------------------ casts
def test_cast_backward_returns_the_input_dtype():
    x = ddpgrad.tensor([1.0, 2.0], dtype=ddpgrad.float32, requires_grad=True)
    y = x.double() * ddpgrad.tensor([3.0, 4.0], dtype=ddpgrad.float64)
    assert y.dtype == ddpgrad.float64
    y.sum().backward()
    assert x.grad.dtype == ddpgrad.float32
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])
    helper_test_op([(2, 3)], lambda x: x.float().double() * 2, rtol=1e-7, check_gradcheck=False)
    helper_test_op([(2, 3)], lambda x: x.to(torch.float32), lambda x: x.to(ddpgrad.float32), rtol=1e-7,
                   check_gradcheck=False)


def test_clone_is_a_copy_with_gradient():
    helper_test_op([(2, 3)], lambda x: x.clone() * 2)
    x = ddpgrad.ones(2)
    y = x.clone()
    y.add_(1)
    assert x.tolist() == [1.0, 1.0]


# ------------------------------------------------------------------ results without gradients
COMPARISONS = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
    "ge": operator.ge,
}


@pytest.mark.parametrize("name", COMPARISONS)
def test_comparisons_return_bool_tensors_without_grad(name):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([[1.0, 0.0, 4.0], [3.0, 5.0, 1.0]])
    op = COMPARISONS[name]
    ta, da = torch.tensor(a, requires_grad=True), ddpgrad.tensor(a, requires_grad=True)
    tb, db = torch.tensor(b), ddpgrad.tensor(b)
    for ours, theirs in [
        (op(da, db), op(ta, tb)),
        (op(da, 2.0), op(ta, 2.0)),
        (op(2.0, da), op(2.0, ta)),
        (op(da, db[0]), op(ta, tb[0])),
        (getattr(da, name)(db), getattr(ta, name)(tb)),
    ]:
        assert_matches_torch(ours, theirs)
        assert not ours.requires_grad and ours.grad_fn is None


@pytest.mark.parametrize("kw", [{}, {"dim": 0}, {"dim": 1}, {"dim": -1, "keepdim": True}], ids=str)
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(name, kw):
    for a in (_TIES, np.random.default_rng(3).standard_normal((3, 4))):
        ta, da = torch.tensor(a, requires_grad=True), ddpgrad.tensor(a, requires_grad=True)
        ours, theirs = getattr(da, name)(**kw), getattr(ta, name)(**kw)
        assert_matches_torch(ours, theirs)
        assert_matches_torch(getattr(ddpgrad, name)(da, **kw), getattr(torch, name)(ta, **kw))
        assert not ours.requires_grad


def test_logical_and_integer_ops_match_torch():
    a = np.array([True, False, True, False])
    b = np.array([True, True, False, False])
    ta, tb, da, db = torch.tensor(a), torch.tensor(b), ddpgrad.tensor(a), ddpgrad.tensor(b)
    for ours, theirs in [(da & db, ta & tb), (da | db, ta | tb), (da ^ db, ta ^ tb), (~da, ~ta),
                         (da.logical_not(), ta.logical_not()), (da.logical_and(db), ta.logical_and(tb))]:
        assert_matches_torch(ours, theirs)
    i = np.array([-7, -3, 3, 7])
    ti, di = torch.tensor(i), ddpgrad.tensor(i)
    for ours, theirs in [(di // 2, ti // 2), (di % 3, ti % 3), (~di, ~ti), (di * 2, ti * 2), (di + di, ti + ti)]:
        assert_matches_torch(ours, theirs)
    f = np.array([-7.5, -3.0, 3.0, 7.5])
    assert_matches_torch(ddpgrad.tensor(f) % 2, torch.tensor(f) % 2)
    assert_matches_torch(ddpgrad.tensor(f) // 2, torch.tensor(f) // 2)


def test_isnan_isfinite_isclose_allclose_equal():
    a = np.array([1.0, np.nan, np.inf, -2.0])
    ta, da = torch.tensor(a), ddpgrad.tensor(a)
    assert_matches_torch(da.isnan(), ta.isnan())
    assert_matches_torch(da.isfinite(), ta.isfinite())
    assert_matches_torch(ddpgrad.isclose(da, da + 1e-9), torch.isclose(ta, ta + 1e-9))
    assert ddpgrad.allclose(ddpgrad.ones(2), ddpgrad.ones(2) + 1e-9)
    assert ddpgrad.equal(ddpgrad.ones(2), ddpgrad.ones(2)) and not ddpgrad.equal(ddpgrad.ones(2), ddpgrad.ones(3))


# ------------------------------------------------------------------ composite graphs
def test_composite_graph_matches_torch():
    def fn(lib_softmax):
        def f(x, w, b):
            h = (x @ w + b).tanh()
            p = lib_softmax(h * h.sigmoid(), -1)
            return (p[:, [0, 0, 1]].sum(1) - h.mean(1)).abs().max() + h.std(0).sum() + (h**2).logsumexp(1).mean()
        return f
    helper_test_op([(5, 3), (3, 4), (4,)], fn(torch.softmax), fn(ddpgrad.softmax))


def test_a_value_used_by_many_ops_gets_every_contribution():
    def f(x):
        y = x * 2
        return y * y + y.exp() + y[0] - y.sum() + (y @ y) + y.relu() * y
    helper_test_op([(4,)], f)
