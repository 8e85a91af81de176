"""``Tensor`` itself: creation and dtype inference, conversion, in-place methods, repr, errors."""

from __future__ import annotations

import numpy as np
import pytest

import ddpgrad
from op_helpers import TORCH_REASON, assert_matches_torch

torch = pytest.importorskip("torch", reason=TORCH_REASON)


@pytest.fixture
def default_float64():
    ddpgrad.set_default_dtype(ddpgrad.float64)
    torch.set_default_dtype(torch.float64)
    yield
    ddpgrad.set_default_dtype(ddpgrad.float32)
    torch.set_default_dtype(torch.float32)


# ------------------------------------------------------------------ creation and dtype inference
DATA = {
    "float": 1.5,
    "int": 3,
    "bool": True,
    "float_list": [1.0, 2.5],
    "int_list": [1, 2, 3],
    "mixed_list": [1, 2.5],
    "bool_list": [True, False],
    "nested": [[1.0, 2.0], [3.0, 4.0]],
    "empty_list": [],
    "np_float64_array": np.array([1.0, 2.0]),
    "np_float32_array": np.array([1.0, 2.0], dtype=np.float32),
    "np_int32_array": np.array([1, 2], dtype=np.int32),
    "np_uint8_array": np.array([1, 255], dtype=np.uint8),
    "np_bool_array": np.array([True, False]),
    "np_float64_scalar": np.float64(1.5),
    "np_float32_scalar": np.float32(1.5),
    "np_int32_scalar": np.int32(5),
    "np_int64_scalar": np.int64(5),
    "np_0d_array": np.array(2.0),
}


@pytest.mark.parametrize("name", DATA)
def test_tensor_infers_dtype_like_torch(name):
    data = DATA[name]
    assert_matches_torch(ddpgrad.tensor(data), torch.tensor(data))


@pytest.mark.parametrize("name", ["float", "float_list", "mixed_list", "nested", "empty_list"])
def test_default_dtype_applies_to_python_floats(name, default_float64):
    data = DATA[name]
    assert_matches_torch(ddpgrad.tensor(data), torch.tensor(data))
    assert ddpgrad.get_default_dtype() == ddpgrad.float64
    assert ddpgrad.zeros(2).dtype == ddpgrad.float64 and ddpgrad.randn(2).dtype == ddpgrad.float64


def test_set_default_dtype_refuses_integers():
    with pytest.raises(TypeError, match="floating"):
        ddpgrad.set_default_dtype(ddpgrad.int64)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "uint8", "bool"])
def test_explicit_dtype(dtype):
    assert_matches_torch(ddpgrad.tensor([0, 1, 2], dtype=getattr(ddpgrad, dtype if dtype != "bool" else "bool")),
                         torch.tensor([0, 1, 2], dtype=getattr(torch, dtype)))


def test_dtype_aliases_are_numpy_dtypes():
    assert ddpgrad.float32 == np.dtype("float32") and ddpgrad.float is ddpgrad.float32
    assert ddpgrad.double is ddpgrad.float64 and ddpgrad.half is ddpgrad.float16
    assert ddpgrad.long is ddpgrad.int64 and ddpgrad.int is ddpgrad.int32
    assert ddpgrad.bool == np.dtype(bool)
    assert ddpgrad.tensor([1.0], dtype=float).dtype == ddpgrad.float32
    assert ddpgrad.tensor([1], dtype=int).dtype == ddpgrad.int64
    assert ddpgrad.tensor([1], dtype="float64").dtype == ddpgrad.float64


def test_tensor_copies_its_data_and_from_numpy_shares_it():
    a = np.array([1.0, 2.0])
    t = ddpgrad.tensor(a)
    shared = ddpgrad.from_numpy(a)
    a[0] = 100.0
    assert t.tolist() == [1.0, 2.0] and shared.tolist() == [100.0, 2.0]
    assert ddpgrad.as_tensor(a)._data is a  # same dtype: no copy
    assert ddpgrad.as_tensor(a, dtype=ddpgrad.float32).dtype == ddpgrad.float32
    assert ddpgrad.as_tensor([1, 2]).dtype == ddpgrad.int64
    u = ddpgrad.tensor(t)
    u.add_(1)
    assert t.tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match="np.ndarray"):
        ddpgrad.from_numpy([1.0])


def test_tensor_from_a_list_of_tensors():
    parts = [ddpgrad.tensor(1.0), ddpgrad.tensor(2.0)]
    assert_matches_torch(ddpgrad.tensor(parts), torch.tensor([torch.tensor(1.0), torch.tensor(2.0)]))
    rows = [ddpgrad.tensor([1, 2]), ddpgrad.tensor([3, 4])]
    assert ddpgrad.tensor(rows).tolist() == [[1, 2], [3, 4]]


def test_tensor_requires_grad_argument():
    t = ddpgrad.tensor([1.0], requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.grad is None
    with pytest.raises(RuntimeError, match="floating point"):
        ddpgrad.tensor([1], requires_grad=True)


FACTORIES = {
    "zeros": lambda m: m.zeros(2, 3),
    "zeros_tuple": lambda m: m.zeros((2, 3)),
    "zeros_list": lambda m: m.zeros([2, 3]),
    "zeros_0d": lambda m: m.zeros(()),
    "ones_int": lambda m: m.ones(2, dtype=m.int64),
    "ones_empty": lambda m: m.ones(0, 3),
    "full_float": lambda m: m.full((2, 2), 1.5),
    "full_int": lambda m: m.full((2,), 7),
    "full_bool": lambda m: m.full((2,), True),
    "arange_int": lambda m: m.arange(5),
    "arange_start_step": lambda m: m.arange(1, 10, 3),
    "arange_float": lambda m: m.arange(0, 1, 0.25),
    "arange_float_end": lambda m: m.arange(5.0),
    "linspace": lambda m: m.linspace(0, 1, 5),
    "eye": lambda m: m.eye(3),
    "eye_rect": lambda m: m.eye(2, 3, dtype=m.float64),
    "zeros_like": lambda m: m.zeros_like(m.ones(2, 3, dtype=m.float64)),
    "ones_like_int": lambda m: m.ones_like(m.arange(3)),
    "full_like": lambda m: m.full_like(m.ones(2), 4.0),
    "empty_like_shape": lambda m: m.empty_like(m.ones(2, 2)).shape,
}


@pytest.mark.parametrize("name", FACTORIES)
def test_factories_match_torch(name):
    make = FACTORIES[name]
    ours, theirs = make(ddpgrad), make(torch)
    if isinstance(theirs, torch.Size):
        assert tuple(ours) == tuple(theirs)
    else:
        assert_matches_torch(ours, theirs)
        assert not ours.requires_grad and ours.is_leaf


def test_factory_requires_grad_and_size_objects():
    t = ddpgrad.zeros(ddpgrad.Size([2, 3]), requires_grad=True)
    assert t.shape == (2, 3) and t.requires_grad
    assert ddpgrad.ones(2, 3).shape.numel() == 6
    assert repr(ddpgrad.ones(2, 3).shape) == "ddpgrad.Size([2, 3])"


@pytest.mark.parametrize("make,dtype", [
    (lambda: ddpgrad.randn(3, 4), ddpgrad.float32),
    (lambda: ddpgrad.rand(3, 4, dtype=ddpgrad.float64), ddpgrad.float64),
    (lambda: ddpgrad.randint(0, 10, (3, 4)), ddpgrad.int64),
    (lambda: ddpgrad.randint(10, (3, 4)), ddpgrad.int64),
    (lambda: ddpgrad.randperm(12), ddpgrad.int64),
    (lambda: ddpgrad.randn_like(ddpgrad.ones(3, 4, dtype=ddpgrad.float64)), ddpgrad.float64),
    (lambda: ddpgrad.rand_like(ddpgrad.ones(3, 4)), ddpgrad.float32),
])
def test_random_factories_are_seeded_and_typed(make, dtype):
    ddpgrad.manual_seed(1234)
    a = make()
    ddpgrad.manual_seed(1234)
    b = make()
    assert a.dtype == dtype and a.numel() == 12
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    ddpgrad.manual_seed(99)
    assert not np.array_equal(make().numpy(), a.numpy())


def test_random_value_ranges():
    ddpgrad.manual_seed(0)
    u = ddpgrad.rand(10_000)
    assert 0 <= u.min().item() and u.max().item() < 1
    r = ddpgrad.randint(3, 7, (10_000,))
    assert set(np.unique(r.numpy())) == {3, 4, 5, 6}
    assert sorted(ddpgrad.randperm(50).tolist()) == list(range(50))
    z = ddpgrad.randn(20_000, dtype=ddpgrad.float64)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05


def test_generator_state_round_trips():
    g = ddpgrad.Generator().manual_seed(5)
    state = g.get_state()
    a = ddpgrad.randn(4, generator=g)
    g.set_state(state)
    np.testing.assert_array_equal(ddpgrad.randn(4, generator=g).numpy(), a.numpy())
    ddpgrad.manual_seed(3)
    s = ddpgrad.get_rng_state()
    x = ddpgrad.rand(3)
    ddpgrad.set_rng_state(s)
    np.testing.assert_array_equal(ddpgrad.rand(3).numpy(), x.numpy())
    assert ddpgrad.initial_seed() == 3


# ------------------------------------------------------------------ conversion
def test_item_tolist_float_int_bool_index():
    t = ddpgrad.tensor([[1.5, 2.0], [3.0, 4.0]])
    assert t.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert t[0, 0].item() == 1.5 and isinstance(t[0, 0].item(), float)
    assert ddpgrad.tensor(3).item() == 3 and isinstance(ddpgrad.tensor(3).item(), int)
    assert float(ddpgrad.tensor([2.5])) == 2.5 and int(ddpgrad.tensor(2.7)) == 2
    assert bool(ddpgrad.tensor(1.0)) and not bool(ddpgrad.tensor([0]))
    assert list(range(10))[ddpgrad.tensor(3)] == 3
    assert len(t) == 2 and [row.tolist() for row in t] == [[1.5, 2.0], [3.0, 4.0]]


def test_numpy_shares_memory_and_refuses_tensors_that_require_grad():
    t = ddpgrad.ones(3)
    t.numpy()[0] = 5.0
    assert t.tolist() == [5.0, 1.0, 1.0]
    w = ddpgrad.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        w.numpy()
    assert w.detach().numpy().tolist() == [1.0, 1.0]
    assert np.asarray(w).tolist() == [1.0, 1.0]  # __array__
    assert np.asarray(w, dtype=np.float64).dtype == np.float64


def test_np_array_copies_and_np_asarray_shares():
    t = ddpgrad.ones(3)
    np.array(t)[0] = 5.0
    np.array(t, dtype=np.float32)[1] = 5.0
    assert t.tolist() == [1.0, 1.0, 1.0]
    np.asarray(t)[2] = 7.0
    assert t.tolist() == [1.0, 1.0, 7.0]
    total = t.sum()  # a 0-d result (a NumPy scalar inside) converts too
    assert np.asarray(total).shape == () and np.array(total, dtype=np.float32) == 9.0


def test_numpy_of_a_0d_result_is_an_array_that_writes_through():
    s = ddpgrad.ones(3).sum()
    a = s.numpy()
    assert isinstance(a, np.ndarray) and a.shape == ()
    a[...] = 7.0
    assert s.item() == 7.0


@pytest.mark.parametrize("method,dtype", [
    ("float", "float32"), ("double", "float64"), ("half", "float16"), ("long", "int64"), ("int", "int32"),
    ("bool", "bool"),
])
def test_conversion_methods(method, dtype):
    data = [0.0, 1.5, -2.5]
    assert_matches_torch(getattr(ddpgrad.tensor(data), method)(), getattr(torch.tensor(data), method)())
    assert getattr(ddpgrad.tensor(data), method)().dtype == np.dtype(dtype)


def test_to_dtype_device_and_other():
    t = ddpgrad.tensor([1.0, 2.0])
    assert t.to(ddpgrad.float64).dtype == ddpgrad.float64
    assert t.to(dtype=ddpgrad.int64).dtype == ddpgrad.int64
    assert t.to("float64").dtype == ddpgrad.float64
    assert t.to("cpu") is t and t.to(ddpgrad.device("cpu")) is t and t.cpu() is t
    assert t.to(ddpgrad.float32) is t
    other = ddpgrad.ones(1, dtype=ddpgrad.float64)
    assert t.to(other).dtype == ddpgrad.float64 and t.type_as(other).dtype == ddpgrad.float64
    assert t.to("cpu", ddpgrad.float64).dtype == ddpgrad.float64
    assert t.device == "cpu" and t.device == ddpgrad.device("cpu") and not t.is_cuda
    with pytest.raises(TypeError, match="unexpected"):
        t.to(banana=1)


def test_shape_queries():
    t = ddpgrad.ones(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.size() == (2, 3, 4) and t.size(-1) == 4 and t.size(0) == 2
    assert t.dim() == t.ndim == 3 and t.numel() == 24 and t.nelement() == 24
    assert t.element_size() == 4 and ddpgrad.ones(1, dtype=ddpgrad.float64).element_size() == 8
    assert t.is_floating_point() and not ddpgrad.tensor([1]).is_floating_point()
    assert ddpgrad.is_tensor(t) and not ddpgrad.is_tensor(t.numpy())
    assert isinstance(t.shape, tuple) and isinstance(t.shape, ddpgrad.Size)


def test_devices():
    assert ddpgrad.device("cuda:1") == ddpgrad.device("cuda", 1)
    assert str(ddpgrad.device("cuda")) == "cuda:0" and str(ddpgrad.device("cpu")) == "cpu"
    assert repr(ddpgrad.device("cpu")) == "device(type='cpu')"
    assert hash(ddpgrad.device("cpu")) == hash(ddpgrad.device("cpu"))
    with pytest.raises(ValueError, match="unknown device"):
        ddpgrad.device("tpu")


# ------------------------------------------------------------------ in-place methods
IN_PLACE = {
    "add_": (lambda t: t.add_(2.0), lambda a: a + 2.0),
    "add_tensor_alpha": (lambda t: t.add_(ddpgrad.tensor([1.0, 2.0, 3.0]), alpha=-2), lambda a: a - 2 * np.array([1, 2, 3])),
    "sub_": (lambda t: t.sub_(0.5), lambda a: a - 0.5),
    "sub_alpha": (lambda t: t.sub_(ddpgrad.ones(3), alpha=3), lambda a: a - 3),
    "mul_": (lambda t: t.mul_(ddpgrad.tensor([2.0, 3.0, 4.0])), lambda a: a * np.array([2, 3, 4])),
    "div_": (lambda t: t.div_(4), lambda a: a / 4),
    "zero_": (lambda t: t.zero_(), lambda a: a * 0),
    "fill_": (lambda t: t.fill_(7.5), lambda a: np.full_like(a, 7.5)),
    "fill_tensor": (lambda t: t.fill_(ddpgrad.tensor(2.0)), lambda a: np.full_like(a, 2.0)),
    "copy_": (lambda t: t.copy_(ddpgrad.tensor([9.0, 8.0, 7.0])), lambda a: np.array([9.0, 8.0, 7.0])),
    "copy_numpy_broadcast": (lambda t: t.copy_(np.array(3.0)), lambda a: np.full_like(a, 3.0)),
    "copy_other_dtype": (lambda t: t.copy_(ddpgrad.tensor([1, 2, 3])), lambda a: np.array([1.0, 2.0, 3.0])),
    "clamp_": (lambda t: t.clamp_(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5)),
    "clamp_min": (lambda t: t.clamp_(min=0.0), lambda a: np.maximum(a, 0)),
    "setitem_slice": (lambda t: t.__setitem__(slice(0, 2), 0.0), lambda a: np.array([0.0, 0.0, a[2]])),
    "setitem_mask": (lambda t: t.__setitem__(t > 0, -1.0), lambda a: np.where(a > 0, -1.0, a)),
    "setitem_index_tensor": (lambda t: t.__setitem__(ddpgrad.tensor([2, 0]), ddpgrad.tensor([5.0, 6.0])),
                             lambda a: np.array([6.0, a[1], 5.0])),
}


@pytest.mark.parametrize("name", IN_PLACE)
def test_in_place_methods(name):
    change, expected = IN_PLACE[name]
    start = np.array([-1.0, 0.25, 2.0], dtype=np.float32)
    t = ddpgrad.tensor(start)
    array, version = t._data, t._version
    result = change(t)
    assert result is None or result is t
    assert t._data is array and t.dtype == ddpgrad.float32  # truly in place
    assert t._version == version + 1
    np.testing.assert_allclose(t.numpy(), expected(start.astype(np.float64)).astype(np.float32))


def test_in_place_through_a_view_changes_the_base():
    base = ddpgrad.zeros(2, 3)
    base[0].add_(1)
    base[:, 2].fill_(5)
    base.view(-1)[1:2].mul_(3)
    assert base.tolist() == [[1.0, 3.0, 5.0], [0.0, 0.0, 5.0]]
    assert base._version == 3


def test_in_place_on_0d_results():
    total = ddpgrad.ones(3).sum()  # NumPy gives this as a scalar, not an array
    total.add_(1).mul_(2)
    assert total.item() == 8.0
    total.zero_()
    assert total.item() == 0.0
    m = ddpgrad.ones(2).mean()
    m[...] = 4.0
    assert m.item() == 4.0


def test_in_place_on_a_leaf_under_no_grad_is_the_optimizer_step():
    w = ddpgrad.tensor([1.0, 2.0], requires_grad=True)
    with ddpgrad.no_grad():
        w.sub_(ddpgrad.tensor([0.5, 0.5]), alpha=2).mul_(2)
        w[0] = 10.0
    assert w.tolist() == [10.0, 2.0] and w.requires_grad and w._version == 3


def test_in_place_casting_follows_torch():
    i = ddpgrad.tensor([1, 2])
    i.add_(1)
    assert i.tolist() == [2, 3] and i.dtype == ddpgrad.int64
    with pytest.raises(RuntimeError, match="int64"):
        i.add_(1.5)  # PyTorch: "result type Float can't be cast to the desired output type Long"
    f = ddpgrad.ones(2)
    f.add_(ddpgrad.ones(2, dtype=ddpgrad.float64))  # float64 into float32 is allowed
    assert f.dtype == ddpgrad.float32 and f.tolist() == [2.0, 2.0]


def test_setitem_of_a_value_that_requires_grad_records_it():
    t = ddpgrad.zeros(2)
    v = ddpgrad.tensor(3.0, requires_grad=True)
    t[0] = v
    assert t.requires_grad and t.tolist() == [3.0, 0.0]
    (t * ddpgrad.tensor([2.0, 5.0])).sum().backward()
    assert v.grad.item() == 2.0


def test_random_in_place_fills():
    ddpgrad.manual_seed(0)
    t = ddpgrad.zeros(1000, dtype=ddpgrad.float64)
    t.uniform_(-2, 3)
    assert -2 <= t.min().item() and t.max().item() < 3 and t.dtype == ddpgrad.float64
    t.normal_(5.0, 0.1)
    assert abs(t.mean().item() - 5.0) < 0.05


def test_data_shares_values_but_not_the_graph():
    w = ddpgrad.tensor([1.0, 2.0], requires_grad=True)
    d = w.data
    assert not d.requires_grad and np.shares_memory(d._data, w._data)
    d.mul_(2)  # allowed: .data is outside autograd
    assert w.tolist() == [2.0, 4.0]
    w.data = ddpgrad.tensor([7.0, 8.0])
    assert w.tolist() == [7.0, 8.0] and w.requires_grad


# ------------------------------------------------------------------ repr
def test_repr():
    assert repr(ddpgrad.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(ddpgrad.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(ddpgrad.tensor(1.5)) == "tensor(1.5)"
    assert repr(ddpgrad.tensor([1.0], dtype=ddpgrad.float64)) == "tensor([1.], dtype=ddpgrad.float64)"
    assert repr(ddpgrad.tensor([1], dtype=ddpgrad.int32)) == "tensor([1], dtype=ddpgrad.int32)"
    assert repr(ddpgrad.tensor([1.0], requires_grad=True)) == "tensor([1.], requires_grad=True)"
    w = ddpgrad.tensor([1.0], requires_grad=True)
    assert repr(w * 2) == "tensor([2.], grad_fn=<MulBackward0>)"
    assert repr(ddpgrad.zeros(2, 2)) == "tensor([[0., 0.],\n        [0., 0.]])"  # rows aligned
    assert repr(ddpgrad.zeros(0)) == "tensor([])"
    assert "MulBackward" in repr((w * 2).grad_fn)


# ------------------------------------------------------------------ errors
def test_conversion_errors():
    with pytest.raises(RuntimeError, match="2 elements cannot be converted"):
        ddpgrad.ones(2).item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(ddpgrad.ones(2))
    with pytest.raises(TypeError, match="0-d"):
        len(ddpgrad.tensor(1.0))
    with pytest.raises(TypeError, match="0-d"):
        iter(ddpgrad.tensor(1.0))
    with pytest.raises(TypeError, match="integer"):
        list(range(3))[ddpgrad.tensor(1.0)]
    with pytest.raises(TypeError, match="can't convert"):
        ddpgrad.tensor("abc")
    with pytest.raises(TypeError, match="dtype"):
        ddpgrad.tensor([1.0], dtype="banana")


def test_mean_of_integers_is_an_error():
    with pytest.raises(RuntimeError, match="floating point"):
        ddpgrad.tensor([1, 2]).mean()


def test_tensors_hash_by_identity_and_compare_elementwise():
    a, b = ddpgrad.ones(2), ddpgrad.ones(2)
    assert len({a, b}) == 2
    assert (a == b).tolist() == [True, True]
