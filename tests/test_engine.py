"""The backward engine: order, accumulation, hooks, graph lifetime, grad mode and their errors."""

from __future__ import annotations

import gc
import re
import threading
import weakref

import numpy as np
import pytest

import ddpgrad
from ddpgrad import autograd
from ddpgrad.autograd import Function, gradcheck
from ddpgrad.autograd.gradcheck import GradcheckError
from ddpgrad.tensor import Tensor


def leaf(values, dtype=ddpgrad.float64):
    return ddpgrad.tensor(values, dtype=dtype, requires_grad=True)


# ------------------------------------------------------------------ graph shape
def test_a_graph_10000_ops_deep_backprops_without_recursion():
    x = leaf(1.0)
    y = x
    for i in range(10_000):
        y = y * 1.0001 if i % 2 else y + 0.5
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**5000, rel=1e-12)
    del y  # freeing the long chain must not recurse either
    gc.collect()


def test_a_node_used_many_times_gets_the_sum_of_its_gradients():
    # tinygrad (2020) overwrote instead of summing when a node fed several consumers
    x = leaf([1.0, 2.0, 3.0])
    y = x * 2  # a non-leaf used five times below
    z = y + y + y * y + y.exp() + y
    z.sum().backward()
    y_np = 2 * np.array([1.0, 2.0, 3.0])
    expected = 2 * (3 + 2 * y_np + np.exp(y_np))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


def test_a_leaf_used_a_hundred_times():
    x = leaf([1.0, -1.0])
    total = x
    for _ in range(99):
        total = total + x
    total.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [100.0, 100.0])


def test_x_times_x_sums_both_inputs():
    x = leaf([3.0])
    (x * x).sum().backward()
    assert x.grad.tolist() == [6.0]


def test_several_roots_in_one_backward_pass():
    x = leaf([1.0, 2.0])
    y = x * 3
    z = y * y  # z depends on y: y's node must wait for z's contribution
    autograd.backward([y.sum(), z.sum()])
    np.testing.assert_allclose(x.grad.numpy(), 3 + 18 * np.array([1.0, 2.0]))


def test_backward_from_a_leaf_with_an_explicit_gradient_keeps_the_leaf_dtype():
    x = leaf([1.0, 2.0], dtype=ddpgrad.float32)
    x.backward(ddpgrad.tensor([0.5, 0.25], dtype=ddpgrad.float64))
    assert x.grad.dtype == ddpgrad.float32
    assert x.grad.tolist() == [0.5, 0.25]


def test_implicit_gradient_is_one_even_for_an_infinite_output():
    x = leaf([np.inf, 1.0])
    x.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])


def test_leaf_gradients_become_final_in_reverse_order_of_use():
    # the reducer relies on this to launch allreduces for the last layers first
    # and to overlap them with the rest of backward: a leaf is accumulated as soon as it is
    # final, before the engine goes on into earlier layers (h1's gradient comes after w2's)
    w1, w2, w3 = leaf([1.0]), leaf([2.0]), leaf([3.0])
    order = []
    for name, w in (("w1", w1), ("w2", w2), ("w3", w3)):
        w.register_post_accumulate_grad_hook(lambda t, name=name: order.append(name))
    x = ddpgrad.tensor([1.0], dtype=ddpgrad.float64)
    h1 = (x * w1).tanh()
    h1.register_hook(lambda g: order.append("h1"))
    h2 = (h1 * w2).tanh()
    (h2 * w3).sum().backward()
    assert order == ["w3", "w2", "h1", "w1"]


# ------------------------------------------------------------------ custom Functions and None gradients
class _NoGradForFirst(Function):
    """a * b whose backward gives None for ``a`` (as if it were not differentiable in a)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return None, grad * a


class _OneGradForTwoInputs(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_a_none_gradient_for_an_input_still_lets_its_other_uses_through():
    x = leaf([1.0, 2.0])
    b = leaf([5.0, 7.0])
    y = _NoGradForFirst.apply(x, b) + x * 3  # x: None from one path, 3 from the other
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 2.0])


def test_a_node_that_gets_only_none_passes_nothing_on():
    x = leaf([1.0, 2.0])
    h = x * 2
    y = _NoGradForFirst.apply(h, ddpgrad.tensor([1.0, 1.0], dtype=ddpgrad.float64, requires_grad=True))
    y.sum().backward()
    assert x.grad is None


def test_backward_returning_too_few_gradients_is_an_error():
    x, y = leaf([1.0]), leaf([2.0])
    with pytest.raises(RuntimeError, match="incorrect number of gradients"):
        _OneGradForTwoInputs.apply(x, y).sum().backward()


def test_custom_function_gets_constants_and_kwargs():
    class Scale(Function):
        @staticmethod
        def forward(ctx, a, factor, *, shift=0.0):
            ctx.factor = factor
            return a * factor + shift

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.factor, None

    x = leaf([1.0, 2.0])
    out = Scale.apply(x, 3.0, shift=1.0)
    assert out.tolist() == [4.0, 7.0] and out.grad_fn.name() == "ScaleBackward0"
    out.sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


# ------------------------------------------------------------------ accumulation in place
def test_leaf_gradients_accumulate_in_place_across_backwards():
    w = leaf([1.0, 2.0, 3.0])
    (w * 2).sum().backward()
    grad_tensor, grad_array = w.grad, w.grad._data
    (w * w).sum().backward()
    assert w.grad is grad_tensor and w.grad._data is grad_array
    np.testing.assert_array_equal(grad_array, 2 + 2 * np.array([1.0, 2.0, 3.0]))


def test_gradient_lands_in_a_buffer_handed_out_before_backward():
    # what the reducer does: .grad is a view into a flat bucket, and must stay one
    flat = np.zeros(8)
    w = leaf(np.ones((2, 3)))
    v = leaf(np.ones(2))
    w.grad = Tensor._make(flat[:6].reshape(2, 3))
    v.grad = Tensor._make(flat[6:])
    ((w * 3).sum() + (v * 5).sum()).backward()
    np.testing.assert_array_equal(flat, [3.0] * 6 + [5.0] * 2)
    assert np.shares_memory(w.grad._data, flat) and np.shares_memory(v.grad._data, flat)


def test_first_gradient_is_a_private_copy():
    w = leaf([1.0, 2.0])
    g = ddpgrad.tensor([1.0, 1.0], dtype=ddpgrad.float64)
    (w + 0).backward(g)  # Add passes g straight through to w
    assert not np.shares_memory(w.grad._data, g._data)
    w.grad._data += 1
    assert g.tolist() == [1.0, 1.0]


class _Doubler(Function):
    """2x; ``returned`` records the arrays backward hands out, ``keep`` also stores one on ctx."""

    returned = []
    keep = False

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        out = grad * 2
        _Doubler.returned.append(out)
        if _Doubler.keep:
            ctx.kept = out
        return out


@pytest.mark.parametrize("keep", [False, True])
def test_a_new_gradient_is_taken_without_a_copy_unless_the_op_keeps_it(monkeypatch, keep):
    from ddpgrad.autograd import engine

    monkeypatch.setattr(engine, "_BUILTIN_OPS", "")  # treat the test's Function as one of ours
    monkeypatch.setattr(_Doubler, "returned", [])
    monkeypatch.setattr(_Doubler, "keep", keep)
    w = leaf([1.0, 2.0])
    _Doubler.apply(w).backward(ddpgrad.tensor([1.0, 1.0], dtype=ddpgrad.float64), retain_graph=True)
    assert (w.grad._data is _Doubler.returned[0]) is not keep
    assert w.grad.tolist() == [2.0, 2.0]


def test_a_users_function_result_is_always_copied():
    w = leaf([1.0, 2.0])
    _Doubler.returned.clear()
    _Doubler.apply(w).backward(ddpgrad.tensor([1.0, 1.0], dtype=ddpgrad.float64))
    assert w.grad._data is not _Doubler.returned[0]
    _Doubler.returned[0] += 100  # the Function may still use what it returned
    assert w.grad.tolist() == [2.0, 2.0]


def test_one_gradient_handed_to_two_leaves_is_copied_for_each():
    w, v = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    ((w + v) * 2).sum().backward()
    assert not np.shares_memory(w.grad._data, v.grad._data)
    w.grad._data += 1
    assert v.grad.tolist() == [2.0, 2.0]


def test_a_gradient_seen_by_a_hook_is_copied():
    w = leaf([1.0, 2.0])
    h = w.clone()
    seen = []
    h.register_hook(seen.append)
    (h * 3).sum().backward()
    assert not np.shares_memory(w.grad._data, seen[0]._data)


def test_a_0d_leaf_accumulates_in_place_too():
    w = leaf(2.0)
    (w * 3).backward()
    held = w.grad._data
    assert isinstance(held, np.ndarray)
    (w * 4).backward()
    assert w.grad._data is held and held.item() == 7.0


# ------------------------------------------------------------------ hooks
def test_post_accumulate_hook_fires_once_per_backward_with_the_final_gradient():
    w = leaf([1.0, 2.0])
    seen = []

    def hook(t):
        assert t is w
        seen.append(t.grad._data.copy())

    w.register_post_accumulate_grad_hook(hook)
    y = w * 2
    loss = (y * w).sum() + w.sum() + (w.exp() * 0.5).sum()  # w reaches the loss by four paths
    loss.backward(retain_graph=True)
    final = w.grad.numpy().copy()
    expected = 4 * np.array([1.0, 2.0]) + 1 + 0.5 * np.exp([1.0, 2.0])
    np.testing.assert_allclose(final, expected, rtol=1e-12)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], final)
    loss.backward()
    assert len(seen) == 2
    np.testing.assert_allclose(seen[1], 2 * expected, rtol=1e-12)


def test_post_accumulate_hook_handle_removes_it_and_non_leaves_refuse_it():
    w = leaf([1.0])
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    (w * 2).sum().backward()
    handle.remove()
    (w * 2).sum().backward()
    assert calls == [1]
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_queue_callback_runs_once_at_the_end_of_backward():
    w1, w2 = leaf([1.0]), leaf([2.0])
    events = []

    def at_end():
        events.append(("end", w1.grad.item(), w2.grad.item()))

    def hook(t):
        events.append(("hook", t.grad.item()))
        if len(events) == 1:
            autograd.queue_callback(at_end)

    for w in (w1, w2):
        w.register_post_accumulate_grad_hook(hook)
    (w1 * w2 * 3).sum().backward()
    assert [e[0] for e in events] == ["hook", "hook", "end"]
    assert events[-1] == ("end", 6.0, 3.0)  # both gradients final when the callback runs


def test_queue_callback_from_a_callback_and_outside_backward():
    w = leaf([1.0])
    order = []

    def second():
        order.append("second")

    def first():
        order.append("first")
        autograd.queue_callback(second)

    w.register_post_accumulate_grad_hook(lambda t: autograd.queue_callback(first))
    (w * 2).sum().backward()
    assert order == ["first", "second"]
    with pytest.raises(RuntimeError, match="backward pass"):
        autograd.queue_callback(first)


def test_register_hook_modifies_the_gradient_of_a_leaf():
    w = leaf([1.0, 2.0])
    w.register_hook(lambda g: g * 10)
    (w * 3).sum().backward()
    assert w.grad.tolist() == [30.0, 30.0]


def test_register_hook_on_a_non_leaf_changes_what_flows_upstream():
    x = leaf([1.0, 2.0])
    y = x * 2
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy().copy()))  # observing: returns None
    handle = y.register_hook(lambda g: g + 1)
    (y * y).sum().backward(retain_graph=True)
    np.testing.assert_array_equal(seen[0], [4.0, 8.0])
    np.testing.assert_array_equal(x.grad.numpy(), 2 * np.array([5.0, 9.0]))
    handle.remove()
    x.grad = None
    (y * y).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [8.0, 16.0])


def test_register_hook_needs_a_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        ddpgrad.ones(2).register_hook(lambda g: g)


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = leaf([1.0, 2.0])
    y = x * 2
    z = x * 3
    y.retain_grad()
    assert y.retains_grad and not z.retains_grad
    (y * y + z).sum().backward(retain_graph=True)
    np.testing.assert_array_equal(y.grad.numpy(), [4.0, 8.0])
    assert z.grad is None
    (y * y + z).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [8.0, 16.0])  # accumulates, like a leaf's
    x.retain_grad()  # a no-op on leaves
    assert not x.retains_grad


def test_retain_grad_sees_the_gradient_after_the_other_hooks():
    x = leaf([1.0, 2.0])
    y = x * 2
    y.retain_grad()
    y.register_hook(lambda g: g * 10)  # registered after retain_grad, still runs before it
    y.sum().backward()
    assert y.grad.tolist() == [10.0, 10.0] and x.grad.tolist() == [20.0, 20.0]


# ------------------------------------------------------------------ graph lifetime
def test_second_backward_without_retain_graph_raises_torch_message():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        loss.backward()


def test_retain_graph_allows_a_second_backward_that_doubles_the_gradients():
    x = leaf([1.0, 2.0])
    loss = (x * x).exp().sum()
    loss.backward(retain_graph=True)
    once = x.grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * once, rtol=1e-15)


def test_backward_frees_what_forward_saved():
    x = leaf(np.ones(3))
    h = (x * 2).exp()  # Exp saves its output array
    saved = weakref.ref(h._data)
    loss = (h * x).sum()
    del h
    gc.collect()
    assert saved() is not None  # the graph holds it until backward
    loss.backward()
    gc.collect()
    assert saved() is None  # Exp and Mul both saved it; both released it


def test_version_counter_catches_a_saved_leaf_modified_in_place():
    w = leaf([1.0, 2.0])
    x = ddpgrad.tensor([3.0, 4.0], dtype=ddpgrad.float64)
    loss = (w * x).sum() + (w * w).sum()
    with ddpgrad.no_grad():
        w.mul_(2)  # an optimizer step before backward
    with pytest.raises(RuntimeError, match="modified by an in-place operation.*version 1; expected version 0"):
        loss.backward()


def test_version_counter_catches_a_saved_input_without_grad_modified_in_place():
    w = leaf([1.0, 2.0])
    x = ddpgrad.tensor([3.0, 4.0], dtype=ddpgrad.float64)
    loss = (w * x).sum()  # w's gradient is x
    x.mul_(10)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        loss.backward()


def test_version_counter_sees_writes_through_a_view():
    w = leaf([1.0, 2.0])
    x = ddpgrad.tensor([[3.0, 4.0]], dtype=ddpgrad.float64)
    loss = (w * x).sum()
    x[0][1] = 100.0  # x[0] is a view sharing x's version counter
    with pytest.raises(RuntimeError, match="in-place"):
        loss.backward()


def test_version_counter_catches_a_saved_output_modified_in_place():
    x = leaf([1.0, 2.0])
    y = x.exp()  # Exp saves its output
    with ddpgrad.no_grad():
        y.mul_(2)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_no_false_alarm_when_the_modified_tensor_is_not_needed():
    w = leaf([1.0, 2.0])
    x = ddpgrad.tensor([3.0, 4.0], dtype=ddpgrad.float64)
    loss = (w + x).sum() + (w * 2).sum()  # Add saves nothing
    x.add_(1)
    loss.backward()
    assert w.grad.tolist() == [3.0, 3.0]
    # and after backward, in-place updates are the normal thing to do
    with ddpgrad.no_grad():
        w.sub_(w.grad, alpha=0.1)
    assert w._version == 1


def test_in_place_on_a_leaf_that_requires_grad_is_refused():
    w = leaf([1.0, 2.0])
    for call in (lambda: w.add_(1), lambda: w.mul_(2), lambda: w.zero_(), lambda: w.fill_(3.0),
                 lambda: w.copy_(np.zeros(2)), lambda: w.clamp_(0, 1), lambda: w.__setitem__(0, 5.0)):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            call()
    assert w.tolist() == [1.0, 2.0] and w._version == 0
    with ddpgrad.no_grad():
        w.add_(1)
    assert w.tolist() == [2.0, 3.0] and w._version == 1


# ------------------------------------------------------------------ autograd.grad
def test_autograd_grad_returns_gradients_without_touching_dot_grad():
    x = leaf([1.0, 2.0])
    w = leaf([3.0, 4.0])
    w.grad = ddpgrad.tensor([9.0, 9.0], dtype=ddpgrad.float64)
    fired = []
    x.register_post_accumulate_grad_hook(lambda t: fired.append(t))
    y = x * w
    gx, gw = autograd.grad(y, [x, w], grad_outputs=ddpgrad.tensor([1.0, 10.0], dtype=ddpgrad.float64))
    assert gx.tolist() == [3.0, 40.0] and gw.tolist() == [1.0, 20.0]
    assert x.grad is None and w.grad.tolist() == [9.0, 9.0] and not fired


def test_autograd_grad_single_input_non_leaf_and_hooks():
    x = leaf([1.0, 2.0])
    h = x * 2
    (gh,) = autograd.grad((h * h).sum(), h)
    assert gh.tolist() == [4.0, 8.0]
    x.register_hook(lambda g: g * 10)
    (gx,) = autograd.grad((x * 3).sum(), x)
    assert gx.tolist() == [30.0, 30.0]  # tensor hooks apply, as in PyTorch


def test_autograd_grad_allow_unused():
    x, unused = leaf([1.0]), leaf([2.0])
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        autograd.grad((x * 2).sum(), [x, unused])
    gx, gu = autograd.grad((x * 2).sum(), [x, unused], allow_unused=True)
    assert gx.tolist() == [2.0] and gu is None


def test_autograd_grad_with_retain_graph_and_multiple_outputs():
    x = leaf([1.0, 2.0])
    a, b = x * 2, x * x
    (g1,) = autograd.grad([a.sum(), b.sum()], [x], retain_graph=True)
    (g2,) = autograd.grad([a.sum(), b.sum()], [x])
    assert g1.tolist() == g2.tolist() == [4.0, 6.0]


def test_autograd_grad_needs_inputs_that_require_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        autograd.grad((leaf([1.0]) * 2).sum(), [ddpgrad.ones(1)])


# ------------------------------------------------------------------ backward errors
def test_backward_on_a_non_scalar_needs_a_gradient():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"implicitly created only for scalar outputs.*\[2\]"):
        (x * 2).backward()
    (x * 2).backward(ddpgrad.ones(2, dtype=ddpgrad.float64))
    (x[:1] * 2).backward()  # one element is fine, as in PyTorch
    assert x.grad.tolist() == [4.0, 2.0]


def test_backward_gradient_shape_must_match():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"shape \[3\].*shape \[2\]"):
        (x * 2).backward(ddpgrad.ones(3))


def test_backward_of_a_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        ddpgrad.ones(1).sum().backward()


def test_create_graph_is_refused_clearly():
    x = leaf([1.0])
    with pytest.raises(NotImplementedError, match="create_graph"):
        (x * x).sum().backward(create_graph=True)


# ------------------------------------------------------------------ detach and requires_grad
def test_detach_shares_memory_and_version_but_not_the_graph():
    x = leaf([1.0, 2.0])
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    assert np.shares_memory(d._data, y._data)
    d.add_(1)  # allowed: d does not require grad
    assert y.tolist() == [3.0, 5.0] and y._version == d._version == 1
    assert (d * x).grad_fn is not None and (d * d).grad_fn is None


def test_detach_in_place_and_requires_grad_flags():
    x = leaf([1.0])
    y = x * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)
    y.detach_()
    assert y.grad_fn is None and not y.requires_grad
    assert x.requires_grad_(False) is x and not x.requires_grad
    with pytest.raises(RuntimeError, match="floating point"):
        ddpgrad.tensor([1, 2]).requires_grad_()
    z = ddpgrad.ones(2)
    assert z.requires_grad_() is z and z.requires_grad and z.is_leaf


def test_results_require_grad_only_when_an_input_does():
    a, b = ddpgrad.ones(2), ddpgrad.ones(2)
    assert not (a * b).requires_grad and (a * b).grad_fn is None
    w = ddpgrad.ones(2, requires_grad=True)
    out = a * w
    assert out.requires_grad and not out.is_leaf and out.grad_fn.name() == "MulBackward0"


# ------------------------------------------------------------------ grad mode
def test_no_grad_context_and_decorator_forms():
    w = leaf([1.0])

    @ddpgrad.no_grad()
    def called():
        return w * 2

    @ddpgrad.no_grad
    def bare():
        return w * 2

    with ddpgrad.no_grad():
        assert not ddpgrad.is_grad_enabled()
        assert not (w * 2).requires_grad
        with ddpgrad.enable_grad():
            assert (w * 2).requires_grad
        assert not ddpgrad.is_grad_enabled()
    assert ddpgrad.is_grad_enabled()
    assert not called().requires_grad and not bare().requires_grad
    assert ddpgrad.is_grad_enabled() and bare.__name__ == "bare"


def test_grad_mode_is_restored_after_an_exception():
    with pytest.raises(ValueError):
        with ddpgrad.no_grad():
            raise ValueError
    assert ddpgrad.is_grad_enabled()


def test_set_grad_enabled_as_function_context_and_decorator():
    w = leaf([1.0])
    try:
        ddpgrad.set_grad_enabled(False)
        assert not (w * 2).requires_grad
    finally:
        ddpgrad.set_grad_enabled(True)
    with ddpgrad.set_grad_enabled(False):
        assert not (w * 2).requires_grad
    assert ddpgrad.is_grad_enabled()

    @ddpgrad.set_grad_enabled(False)
    def off():
        return ddpgrad.is_grad_enabled()

    assert ddpgrad.is_grad_enabled()  # decorating does not switch it off
    assert off() is False and ddpgrad.is_grad_enabled()
    with ddpgrad.no_grad(), ddpgrad.set_grad_enabled(True):
        assert (w * 2).requires_grad


def test_inference_mode_is_no_grad():
    with ddpgrad.inference_mode():
        assert not (leaf([1.0]) * 2).requires_grad


def test_no_grad_in_one_thread_does_not_affect_another():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def other():
        with ddpgrad.no_grad():
            inside.set()
            done.wait(5)
            seen["other"] = ddpgrad.is_grad_enabled()

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(5)
    seen["main"] = ddpgrad.is_grad_enabled()
    seen["records"] = (leaf([1.0]) * 2).requires_grad
    done.set()
    t.join(5)
    assert seen == {"other": False, "main": True, "records": True}


def test_backward_in_two_threads_at_once():
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def work(k):
        try:
            x = leaf(np.full(3, float(k)))
            barrier.wait(5)
            y = x
            for _ in range(200):
                y = (y * 1.001).tanh() + x * 0.0
            y.sum().backward()
            results[k] = x.grad.numpy().copy()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    for k in (1, 2):
        x = leaf(np.full(3, float(k)))
        y = x
        for _ in range(200):
            y = (y * 1.001).tanh() + x * 0.0
        y.sum().backward()
        np.testing.assert_array_equal(results[k], x.grad.numpy())


# ------------------------------------------------------------------ gradcheck can fail
class _WrongAtOneElement(Function):
    """2x, except that the gradient of element 2 is off by 0.5: gradcheck must point at it."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        g = grad * 2
        g[..., 2] += 0.5 * grad[..., 2]
        return g


def test_gradcheck_reports_the_worst_element_of_a_wrong_function():
    x = ddpgrad.randn(4, dtype=ddpgrad.float64, requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(_WrongAtOneElement.apply, [x])
    message = str(info.value)
    assert "output element 2" in message and "input 0 element 2" in message
    analytic, numerical = re.search(r"analytic (\S+), numerical (\S+) ", message).groups()
    assert float(analytic) == 2.5 and float(numerical) == pytest.approx(2.0, abs=1e-6)
    assert gradcheck(_WrongAtOneElement.apply, [x], raise_exception=False) is False


def test_gradcheck_passes_a_correct_function_and_needs_float64():
    x = ddpgrad.randn(3, dtype=ddpgrad.float64, requires_grad=True)
    y = ddpgrad.randn(3, dtype=ddpgrad.float64, requires_grad=True)
    assert gradcheck(lambda a, b: (a * b).tanh(), [x, y])
    with pytest.raises(ValueError, match="float64"):
        gradcheck(lambda a: a * 2, [ddpgrad.randn(3, requires_grad=True)])
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(lambda a: a * 2, [ddpgrad.randn(3, dtype=ddpgrad.float64)])


# ------------------------------------------------------------------ devices
class _FakeCudaArray(np.ndarray):
    """A different array type, standing in for a CuPy array (no GPU here)."""


def test_mixing_devices_is_a_clear_error(monkeypatch):
    from ddpgrad.autograd import function

    real = function.device_of
    monkeypatch.setattr(function, "device_of",
                        lambda a: ddpgrad.device("cuda", 0) if isinstance(a, _FakeCudaArray) else real(a))
    gpu = Tensor._make(np.ones(3).view(_FakeCudaArray))
    with pytest.raises(RuntimeError, match="same device.*cpu.*cuda:0.*to\\(device\\)"):
        ddpgrad.ones(3) + gpu
    with pytest.raises(RuntimeError, match="Mul: expected all tensors to be on the same device"):
        gpu * ddpgrad.ones(3)


@pytest.mark.skipif(not ddpgrad.cuda.is_available(), reason="needs a CUDA GPU with CuPy for a real second device")
def test_mixing_cpu_and_cuda_tensors_is_a_clear_error():
    gpu = ddpgrad.ones(3, device="cuda", requires_grad=True)
    with pytest.raises(RuntimeError, match="same device.*(cpu.*cuda:0|cuda:0.*cpu)"):
        gpu * ddpgrad.ones(3)
    total = (gpu * 2).sum()  # a 0-d result on the GPU mixes with GPU arrays
    (gpu * total).sum().backward()
    assert gpu.grad.device == "cuda:0" and gpu.grad.tolist() == [12.0, 12.0, 12.0]


def test_a_0d_result_mixes_with_arrays_without_a_device_false_alarm():
    # NumPy returns 0-d results as scalars (a different type than ndarray): same device all the same
    h = leaf([1.0, 2.0, 4.0])
    centered = h - h.mean()
    (centered * centered).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * (np.array([1.0, 2.0, 4.0]) - 7 / 3), rtol=1e-12)
