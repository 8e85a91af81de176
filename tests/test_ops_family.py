"""The elementwise family, scans, index/order ops and einsum against PyTorch (float64) and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest

import ddpgrad
from op_helpers import TORCH_REASON, assert_matches_torch, helper_test_op

torch = pytest.importorskip("torch", reason=TORCH_REASON)
F = torch.nn.functional


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else ddpgrad


def _F(x):
    return F if isinstance(x, torch.Tensor) else ddpgrad.nn.functional


# name -> (function on either library, low, high): ranges keep each op away from its poles
UNARY = {
    "sin": (lambda x: _lib(x).sin(x), -3, 3),
    "cos": (lambda x: x.cos(), -3, 3),
    "tan": (lambda x: _lib(x).tan(x), -1.2, 1.2),
    "asin": (lambda x: _lib(x).asin(x), -0.9, 0.9),
    "acos": (lambda x: x.acos(), -0.9, 0.9),
    "atan": (lambda x: _lib(x).atan(x), -3, 3),
    "sinh": (lambda x: _lib(x).sinh(x), -2, 2),
    "cosh": (lambda x: x.cosh(), -2, 2),
    "asinh": (lambda x: _lib(x).asinh(x), -2, 2),
    "acosh": (lambda x: _lib(x).acosh(x), 1.2, 3),
    "atanh": (lambda x: _lib(x).atanh(x), -0.9, 0.9),
    "exp2": (lambda x: _lib(x).exp2(x), -2, 2),
    "expm1": (lambda x: x.expm1(), -2, 2),
    "log1p": (lambda x: _lib(x).log1p(x), -0.5, 2),
    "log2": (lambda x: x.log2(), 0.2, 3),
    "log10": (lambda x: _lib(x).log10(x), 0.2, 3),
    "rsqrt": (lambda x: x.rsqrt(), 0.2, 3),
    "reciprocal": (lambda x: _lib(x).reciprocal(x), 0.3, 3),
    "square": (lambda x: x.square(), -2, 2),
    "erf": (lambda x: _lib(x).erf(x), -2, 2),
    "erfc": (lambda x: _lib(x).erfc(x), -2, 2),
    "sign": (lambda x: _lib(x).sign(x), -2, 2),
    "floor": (lambda x: x.floor(), -3, 3),
    "ceil": (lambda x: _lib(x).ceil(x), -3, 3),
    "round": (lambda x: _lib(x).round(x), -3, 3),
    "round_decimals": (lambda x: _lib(x).round(x, decimals=1), -3, 3),
    "trunc": (lambda x: x.trunc(), -3, 3),
    "frac": (lambda x: x.frac(), -3, 3),
    "softplus": (lambda x: _F(x).softplus(x), -3, 3),
    "softplus_beta": (lambda x: _F(x).softplus(x, beta=2.0, threshold=3.0), -3, 3),
    "silu": (lambda x: _F(x).silu(x), -3, 3),
    "mish": (lambda x: _F(x).mish(x), -3, 3),
    "logsigmoid": (lambda x: _F(x).logsigmoid(x), -3, 3),
    "softsign": (lambda x: _F(x).softsign(x), -3, 3),
    "tanhshrink": (lambda x: _F(x).tanhshrink(x), -3, 3),
    "leaky_relu": (lambda x: _F(x).leaky_relu(x, 0.1), -3, 3),
    "elu": (lambda x: _F(x).elu(x, alpha=0.7), -3, 3),
    "selu": (lambda x: _F(x).selu(x), -3, 3),
    "celu": (lambda x: _F(x).celu(x, alpha=1.5), -3, 3),
    "hardtanh": (lambda x: _F(x).hardtanh(x, -1.5, 0.5), -3, 3),
    "relu6": (lambda x: _F(x).relu6(x * 4), -3, 3),
    "hardsigmoid": (lambda x: _F(x).hardsigmoid(x * 2), -3, 3),
    "hardswish": (lambda x: _F(x).hardswish(x * 2), -3, 3),
    "clamp_min": (lambda x: x.clamp_min(0.3), -3, 3),
    "norm": (lambda x: x.norm(), -3, 3),
    "norm_p3_dim": (lambda x: _lib(x).norm(x, p=3, dim=1, keepdim=True), -3, 3),
    "norm_inf": (lambda x: x.norm(p=float("inf"), dim=0), -3, 3),
    "norm_1": (lambda x: x.norm(p=1, dim=-1), -3, 3),
    "vector_norm": (lambda x: _lib(x).linalg.vector_norm(x, ord=2, dim=(0, 1)), -3, 3),
    "linalg_norm": (lambda x: _lib(x).linalg.norm(x), -3, 3),
    "prod": (lambda x: x.prod(), -2, 2),
    "prod_dim": (lambda x: _lib(x).prod(x, 1, keepdim=True), -2, 2),
    "cumsum": (lambda x: _lib(x).cumsum(x, dim=1), -2, 2),
    "cumprod": (lambda x: x.cumprod(0), -2, 2),
    "flip": (lambda x: _lib(x).flip(x, [0, 1]), -2, 2),
    "roll": (lambda x: _lib(x).roll(x, shifts=(1, -2), dims=(0, 1)), -2, 2),
    "roll_flat": (lambda x: x.roll(3), -2, 2),
    "repeat": (lambda x: x.repeat(2, 1, 3), -2, 2),
    "tile": (lambda x: _lib(x).tile(x, (2,)), -2, 2),
    "repeat_interleave": (lambda x: x.repeat_interleave(2, dim=1), -2, 2),
    "sort_desc": (lambda x: _lib(x).sort(x, dim=1, descending=True), -2, 2),
    "sort": (lambda x: x.sort(0), -2, 2),
    "topk": (lambda x: _lib(x).topk(x, 2, dim=1), -2, 2),
    "topk_smallest": (lambda x: x.topk(2, dim=0, largest=False), -2, 2),
    "split": (lambda x: _lib(x).split(x, 2, dim=1), -2, 2),
    "split_sizes": (lambda x: x.split([1, 3], dim=1), -2, 2),
    "chunk": (lambda x: x.chunk(2, dim=0), -2, 2),
    "unbind": (lambda x: _lib(x).unbind(x, 1), -2, 2),
    "tril": (lambda x: x.tril(), -2, 2),
    "triu": (lambda x: _lib(x).triu(x, 1), -2, 2),
    "diagonal": (lambda x: _lib(x).diagonal(x, 1), -2, 2),
    "trace": (lambda x: x.trace(), -2, 2),
    "movedim": (lambda x: _lib(x).movedim(x, 0, 1), -2, 2),
    "narrow": (lambda x: x.narrow(1, 1, 2), -2, 2),
    "select": (lambda x: x.select(1, 2), -2, 2),
    "median": (lambda x: x.median(), -2, 2),
    "kthvalue": (lambda x: x.kthvalue(2, dim=1), -2, 2),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_family_matches_torch(name):
    fn, low, high = UNARY[name]
    # PyTorch's hardsigmoid backward multiplies by the float32 constant 1/6 even in float64
    rtol = 1e-7 if name == "hardsigmoid" else 1e-10
    helper_test_op([(3, 4)], fn, low=low, high=high, rtol=rtol,
                   check_gradcheck=name not in ("median", "kthvalue"))


BINARY = {
    "atan2": (lambda a, b: _lib(a).atan2(a, b), ((-2, -2), (2, 2))),
    "pow_tensor_exponent": (lambda a, b: a ** b, ((0.5, -2), (2, 2))),
    "rpow": (lambda a, b: 2.0 ** a + b, ((-2, -2), (2, 2))),
    "remainder": (lambda a, b: _lib(a).remainder(a, b), ((-3, 0.5), (3, 2))),
    "fmod": (lambda a, b: _lib(a).fmod(a, b), ((-3, 0.5), (3, 2))),
    "mod_operator": (lambda a, b: a % b, ((-3, 0.5), (3, 2))),
    "lerp": (lambda a, b: _lib(a).lerp(a, b, 0.3), ((-2, -2), (2, 2))),
    "hypot": (lambda a, b: _lib(a).hypot(a, b), ((0.5, 0.5), (2, 2))),
    "logaddexp": (lambda a, b: _lib(a).logaddexp(a, b), ((-2, -2), (2, 2))),
    "addcmul": (lambda a, b: _lib(a).addcmul(a, a, b, value=0.5), ((-2, -2), (2, 2))),
    "addcdiv": (lambda a, b: a.addcdiv(a, b, value=2), ((-2, 0.5), (2, 2))),
    "xlogy": (lambda a, b: _lib(a).xlogy(a, b), ((-2, 0.5), (2, 2))),
    "outer_flat": (lambda a, b: _lib(a).outer(a.reshape(-1), b.reshape(-1)), ((-2, -2), (2, 2))),
    "maximum": (lambda a, b: _lib(a).maximum(a, b), ((-2, -2), (2, 2))),
}


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_family_matches_torch(name):
    fn, (low, high) = BINARY[name]
    helper_test_op([(2, 3), (2, 3)], fn, low=list(low), high=list(high))


EINSUM = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("ij->j", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij,ij->i", [(3, 4), (3, 4)]),
    ("ij", [(3, 4)]),
    ("ji", [(3, 4)]),
    ("ik,kj", [(2, 3), (3, 2)]),
    ("...ij,...jk->...ik", [(2, 2, 3), (2, 3, 2)]),
    ("bi,bj->b", [(2, 3), (2, 4)]),
]


@pytest.mark.parametrize("equation,shapes", EINSUM, ids=[e for e, _ in EINSUM])
def test_einsum_matches_torch(equation, shapes):
    helper_test_op(shapes, lambda *xs: _lib(xs[0]).einsum(equation, *xs))


def _index(lib, values):
    return lib.tensor(values, dtype=lib.int64)


INDEXED = {
    "gather_dim1": lambda x: _lib(x).gather(x, 1, _index(_lib(x), [[0, 0, 3], [1, 2, 1], [3, 3, 3]])),
    "gather_dim0_small": lambda x: x.gather(0, _index(_lib(x), [[2, 0], [2, 2]])),
    "scatter": lambda x: x.scatter(1, _index(_lib(x), [[0, 2], [1, 3], [3, 0]]), x[:, :2] * 3),
    "scatter_value": lambda x: x.scatter(0, _index(_lib(x), [[0, 2, 1, 0]]), 1.5),
    "scatter_add": lambda x: _lib(x).scatter_add(x, 1, _index(_lib(x), [[0, 0], [1, 1], [3, 0]]), x[:, 1:3] * 2),
    "index_select": lambda x: _lib(x).index_select(x, 1, _index(_lib(x), [3, 0, 3])),
    "index_add": lambda x: x.index_add(0, _index(_lib(x), [2, 2]), x[:2] * 2, alpha=0.5),
    "index_fill": lambda x: x.index_fill(1, _index(_lib(x), [0, 2]), -1.0),
    "take": lambda x: _lib(x).take(x, _index(_lib(x), [[0, 11], [5, 5]])),
    "take_along_dim": lambda x: _lib(x).take_along_dim(x, x.argsort(dim=1), dim=1),
    "masked_select": lambda x: _lib(x).masked_select(x, x > 0),
    "repeat_interleave_tensor": lambda x: x.repeat_interleave(_index(_lib(x), [1, 0, 2]), dim=0),
    "diag_vector": lambda x: _lib(x).diag(x[0], 1),
}


@pytest.mark.parametrize("name", list(INDEXED))
def test_indexed_ops_match_torch(name):
    helper_test_op([(3, 4)], INDEXED[name])


def test_prod_and_cumprod_with_zeros_match_torch():
    values = np.array([[1.5, 0.0, 2.0, -1.0], [0.0, 0.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    helper_test_op(None, lambda x: x.prod(1), arrays=[values])
    helper_test_op(None, lambda x: x.prod(), arrays=[values[2:] * values[:1]])
    helper_test_op(None, lambda x: x.cumprod(1), arrays=[values])


def test_sort_indices_are_stable_and_descending_like_torch():
    values = np.array([[2.0, 1.0, 2.0, 0.5, 1.0]])
    for descending in (False, True):
        ours = ddpgrad.tensor(values).sort(dim=1, descending=descending, stable=True)
        theirs = torch.tensor(values).sort(dim=1, descending=descending, stable=True)
        assert_matches_torch(ours.values, theirs.values)
        assert_matches_torch(ours.indices, theirs.indices)


@pytest.mark.parametrize("name", ["floor", "ceil", "round", "trunc", "sign", "abs", "neg", "square", "cumsum",
                                  "cumprod", "prod", "flip", "sqrt", "exp", "sin", "sigmoid", "reciprocal"])
def test_integer_inputs_get_torchs_result_dtype(name):
    values = np.array([[3, -1, 0], [2, 5, -4]])
    extra = {"cumsum": (1,), "cumprod": (1,), "flip": ((0,),)}.get(name, ())
    ours = getattr(ddpgrad, name)(ddpgrad.tensor(values), *extra)
    theirs = getattr(torch, name)(torch.tensor(values), *extra)
    assert_matches_torch(ours, theirs, rtol=1e-6)  # float32 results


def test_split_pieces_are_views_of_the_input():
    x = ddpgrad.zeros(2, 4)
    a, b = x.split(2, dim=1)
    with ddpgrad.no_grad():
        b.fill_(7.0)
    assert x.tolist() == [[0, 0, 7, 7], [0, 0, 7, 7]] and x._version == 1


def test_bad_arguments_name_the_value():
    x = ddpgrad.zeros(2, 3)
    with pytest.raises(RuntimeError, match="index out of range.*\\[0, 2\\]"):
        x.gather(1, ddpgrad.tensor([[0, 3, 1], [0, 0, 0]]))
    with pytest.raises(RuntimeError, match="sum exactly to 3"):
        x.split([1, 1], dim=1)
    with pytest.raises(RuntimeError, match="k=4 out of range"):
        x.topk(4)
    with pytest.raises(RuntimeError, match="subscripts 'ijk'"):
        ddpgrad.einsum("ijk->i", x)


COMPOSED = {
    "meshgrid_ij": (lambda a, b: _lib(a).meshgrid(a.reshape(-1), b.reshape(-1), indexing="ij"), [(3,), (2,)]),
    "meshgrid_xy": (lambda a, b: _lib(a).meshgrid(a.reshape(-1), b.reshape(-1), indexing="xy"), [(3,), (2,)]),
    "cartesian_prod": (lambda a, b: _lib(a).cartesian_prod(a, b), [(3,), (2,)]),
    "tensordot": (lambda a, b: _lib(a).tensordot(a, b, dims=([1, 2], [0, 1])), [(2, 3, 2), (3, 2, 2)]),
    "kron": (lambda a, b: _lib(a).kron(a, b), [(2, 2), (2, 3)]),
    "cross": (lambda a, b: _lib(a).cross(a, b, dim=1), [(2, 3), (2, 3)]),
    "cdist": (lambda a, b: _lib(a).cdist(a, b), [(3, 2), (4, 2)]),
    "hstack": (lambda a, b: _lib(a).hstack([a, b]), [(2, 3), (2, 2)]),
    "vstack": (lambda a, b: _lib(a).vstack([a, b]), [(3,), (3,)]),
    "column_stack": (lambda a, b: _lib(a).column_stack([a, b]), [(3,), (3, 2)]),
    "dstack": (lambda a, b: _lib(a).dstack([a, b]), [(2, 3), (2, 3)]),
    "rot90": (lambda a, b: _lib(a).rot90(a, 1, (0, 1)) + b, [(2, 3), (3, 2)]),
    "rot90_k3": (lambda a, b: _lib(a).rot90(a, 3, (0, 1)) * b, [(2, 3), (3, 2)]),
    "baddbmm": (lambda a, b: _lib(a).baddbmm(a[:, :, :2], a, b, beta=0.5, alpha=2), [(2, 2, 3), (2, 3, 2)]),
    "var_mean": (lambda a, b: _lib(a).var_mean(a + b, dim=1), [(2, 3), (2, 3)]),
    "std_mean": (lambda a, b: _lib(a).std_mean(a * b), [(2, 3), (2, 3)]),
    "broadcast_tensors": (lambda a, b: _lib(a).broadcast_tensors(a, b), [(2, 1), (1, 3)]),
    "inverse": (lambda a, b: _lib(a).inverse(a + 3 * _lib(a).eye(3, dtype=a.dtype)) @ b, [(3, 3), (3, 2)]),
    "det": (lambda a, b: _lib(a).det(a + 2 * _lib(a).eye(3, dtype=a.dtype)) * b, [(3, 3), (2,)]),
    "diag_embed": (lambda a, b: _lib(a).diag_embed(a) + b, [(2, 3), (3, 3)]),
    "logit": (lambda a, b: _lib(a).logit(a) * b, [(2, 3), (2, 3)]),
}


@pytest.mark.parametrize("name", list(COMPOSED))
def test_composed_ops_match_torch(name):
    fn, shapes = COMPOSED[name]
    low = 0.1 if name == "logit" else -2
    high = 0.9 if name == "logit" else 2
    helper_test_op(shapes, fn, low=low, high=high)


def test_no_gradient_helpers_match_torch():
    values = np.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    boundaries = np.array([1, 3, 5])
    for name, call in {
        "searchsorted": lambda lib: lib.searchsorted(lib.tensor(boundaries), lib.tensor(values)),
        "bucketize_right": lambda lib: lib.bucketize(lib.tensor(values), lib.tensor(boundaries), right=True),
        "unique": lambda lib: lib.unique(lib.tensor(values), return_inverse=True, return_counts=True),
        "bincount": lambda lib: lib.bincount(lib.tensor(values).reshape(-1), minlength=12),
        "isin": lambda lib: lib.isin(lib.tensor(values), lib.tensor(boundaries)),
        "histc": lambda lib: lib.histc(lib.tensor(values).double(), bins=4, min=0, max=10),
        "heaviside": lambda lib: lib.heaviside(lib.tensor(values - 3.0), lib.tensor(0.5, dtype=lib.float64)),
        "rmod": lambda lib: 7 % lib.tensor(values + 1),
        "new_full": lambda lib: lib.tensor(values).new_full((2, 2), 3),
        "stride": lambda lib: lib.tensor(values).t().stride(),
    }.items():
        theirs, ours = call(torch), call(ddpgrad)
        theirs = theirs if isinstance(theirs, tuple) else (theirs,)
        ours = ours if isinstance(ours, tuple) else (ours,)
        for t, o in zip(theirs, ours):
            if isinstance(t, int):
                assert o == t, name
            else:
                assert_matches_torch(o, t, what=name)


def test_shape_changing_in_place_methods_keep_values_and_history():
    w = ddpgrad.tensor([1.0, 2.0], requires_grad=True)
    h = w * 3
    h.unsqueeze_(0)
    assert h.shape == (1, 2)
    h.t_()
    (h * ddpgrad.tensor([[1.0], [2.0]])).sum().backward()
    assert w.grad.tolist() == [3.0, 6.0]
