"""Optimizers: parity with PyTorch's single-tensor updates, in-place state, checkpoints, errors."""

from __future__ import annotations

import copy
import io
import tracemalloc

import numpy as np
import pytest

import ddpgrad
from ddpgrad.optim import SGD, Adam, AdamW

torch = pytest.importorskip("torch", reason="PyTorch (CPU) is the parity oracle: pip install torch==2.13.0")

STEPS = 20
RTOL = 1e-10
SHAPES = [(5, 3), (3,)]

# A fixed smooth loss whose gradient we compute with NumPy from each side's own parameters, so
# both optimizers see the same gradient function and any difference comes from the update rule.
_rng = np.random.default_rng(0)
_TARGETS = [_rng.standard_normal(s) for s in SHAPES]
_SCALES = [0.5 + _rng.random(s) for s in SHAPES]


def _grad(i, w, step):
    return _SCALES[i] * (w - _TARGETS[i]) + np.sin(3 * w) + 0.01 * step


def _initial():
    rng = np.random.default_rng(1)
    return [rng.standard_normal(s) for s in SHAPES]


def _ours(arrays):
    return [ddpgrad.tensor(a.copy(), dtype=ddpgrad.float64, requires_grad=True) for a in arrays]


def _theirs(arrays):
    return [torch.tensor(a.copy(), dtype=torch.float64, requires_grad=True) for a in arrays]


def _run_ours(opt, params, steps, start=0):
    for step in range(start, start + steps):
        for i, p in enumerate(params):
            g = _grad(i, p._data, step)
            if p.grad is None:
                p.grad = ddpgrad.tensor(g)
            else:
                p.grad._data[...] = g
        opt.step()


def _run_theirs(opt, params, steps, start=0):
    for step in range(start, start + steps):
        for i, p in enumerate(params):
            p.grad = torch.from_numpy(_grad(i, p.detach().numpy(), step))
        opt.step()


def _assert_same(ours, theirs):
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a._data, b.detach().numpy(), rtol=RTOL, atol=1e-12)


def _param_values(params):
    return [p._data.copy() for p in params]


SGD_CASES = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "weight_decay": 0.1},
    {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1, "nesterov": True},
    {"lr": 0.05, "momentum": 0.5, "dampening": 0.5, "weight_decay": 0.05, "maximize": True},
    {"lr": 0.02, "maximize": True},
    {"lr": 0.02, "momentum": 0.9, "maximize": True, "nesterov": True},
]
ADAM_CASES = [
    {},
    {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 0.01, "betas": (0.3, 0.9)},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.01, "amsgrad": True},
    {"lr": 0.01, "maximize": True},
    {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True},
]
ADAMW_CASES = [
    {},
    {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
    {"lr": 0.01, "weight_decay": 0.05, "maximize": True, "betas": (0.5, 0.9)},
]
ADAPTIVE_CASES = [
    (ddpgrad.optim.RMSprop, torch.optim.RMSprop, {}),
    (ddpgrad.optim.RMSprop, torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "momentum": 0.8, "centered": True,
                                                  "weight_decay": 0.1}),
    (ddpgrad.optim.RMSprop, torch.optim.RMSprop, {"lr": 0.005, "momentum": 0.5, "maximize": True}),
    (ddpgrad.optim.Adagrad, torch.optim.Adagrad, {}),
    (ddpgrad.optim.Adagrad, torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1,
                                                  "initial_accumulator_value": 0.5, "maximize": True}),
    (ddpgrad.optim.Adamax, torch.optim.Adamax, {}),
    (ddpgrad.optim.Adamax, torch.optim.Adamax, {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1,
                                                "maximize": True}),
    (ddpgrad.optim.NAdam, torch.optim.NAdam, {}),
    (ddpgrad.optim.NAdam, torch.optim.NAdam, {"lr": 0.01, "momentum_decay": 0.01, "weight_decay": 0.1}),
    (ddpgrad.optim.NAdam, torch.optim.NAdam, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True,
                                              "maximize": True}),
    (ddpgrad.optim.RAdam, torch.optim.RAdam, {}),
    (ddpgrad.optim.RAdam, torch.optim.RAdam, {"lr": 0.01, "betas": (0.5, 0.9), "weight_decay": 0.1}),
    (ddpgrad.optim.RAdam, torch.optim.RAdam, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True,
                                              "maximize": True}),
]
ALL_CASES = (
    [(SGD, torch.optim.SGD, kw) for kw in SGD_CASES]
    + [(Adam, torch.optim.Adam, kw) for kw in ADAM_CASES]
    + [(AdamW, torch.optim.AdamW, kw) for kw in ADAMW_CASES]
    + ADAPTIVE_CASES
)
CASE_IDS = [f"{ours.__name__}-{kw}" for ours, _, kw in ALL_CASES]


@pytest.mark.parametrize("ours_cls, theirs_cls, kwargs", ALL_CASES, ids=CASE_IDS)
def test_optimizer_matches_pytorch_for_20_steps(ours_cls, theirs_cls, kwargs):
    init = _initial()
    ours, theirs = _ours(init), _theirs(init)
    _run_ours(ours_cls(ours, **kwargs), ours, STEPS)
    _run_theirs(theirs_cls(theirs, foreach=False, **kwargs), theirs, STEPS)
    _assert_same(ours, theirs)
    assert not np.allclose(ours[0]._data, init[0])  # the parameters did move


@pytest.mark.parametrize("ours_cls, theirs_cls, kwargs", ALL_CASES, ids=CASE_IDS)
def test_state_dict_layout_matches_pytorch(ours_cls, theirs_cls, kwargs):
    init = _initial()
    ours, theirs = _ours(init), _theirs(init)
    opt, topt = ours_cls(ours, **kwargs), theirs_cls(theirs, foreach=False, **kwargs)
    _run_ours(opt, ours, 2)
    _run_theirs(topt, theirs, 2)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    for index, state in sd["state"].items():
        assert state.keys() == tsd["state"][index].keys()
        for key, value in state.items():
            np.testing.assert_allclose(np.asarray(value), tsd["state"][index][key].numpy(), rtol=RTOL)
    for group, tgroup in zip(sd["param_groups"], tsd["param_groups"]):
        assert group["params"] == tgroup["params"]
        assert set(group) <= set(tgroup)
        assert all(group[k] == tgroup[k] for k in group)


@pytest.mark.parametrize("ours_cls, theirs_cls, kwargs", [
    (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (Adam, torch.optim.Adam, {"lr": 0.01, "amsgrad": True}),
])
def test_loads_pytorch_state_dict_and_continues_identically(ours_cls, theirs_cls, kwargs):
    init = _initial()
    theirs = _theirs(init)
    topt = theirs_cls(theirs, foreach=False, **kwargs)
    _run_theirs(topt, theirs, 10)
    tsd = topt.state_dict()
    as_numpy = {
        "state": {i: {k: v.numpy().copy() for k, v in s.items()} for i, s in tsd["state"].items()},
        "param_groups": copy.deepcopy(tsd["param_groups"]),
    }
    ours = _ours([p.detach().numpy() for p in theirs])
    opt = ours_cls(ours, lr=123.0)
    opt.load_state_dict(as_numpy)
    _run_ours(opt, ours, 10, start=10)
    _run_theirs(topt, theirs, 10, start=10)
    _assert_same(ours, theirs)


def test_param_groups_with_their_own_hyperparameters_match_pytorch():
    init = _initial()
    ours, theirs = _ours(init), _theirs(init)
    spec = lambda ps: [{"params": [ps[0]], "lr": 0.1}, {"params": [ps[1]], "momentum": 0.9}]  # noqa: E731
    opt = SGD(spec(ours), lr=0.01)
    _run_ours(opt, ours, STEPS)
    _run_theirs(torch.optim.SGD(spec(theirs), lr=0.01, foreach=False), theirs, STEPS)
    _assert_same(ours, theirs)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert [g["momentum"] for g in opt.param_groups] == [0, 0.9]

    ours, theirs = _ours(init), _theirs(init)
    opt = Adam([ours[0]], lr=0.01)
    opt.add_param_group({"params": ours[1], "lr": 0.003, "betas": (0.5, 0.6)})
    topt = torch.optim.Adam([theirs[0]], lr=0.01, foreach=False)
    topt.add_param_group({"params": theirs[1], "lr": 0.003, "betas": (0.5, 0.6)})
    _run_ours(opt, ours, STEPS)
    _run_theirs(topt, theirs, STEPS)
    _assert_same(ours, theirs)


def _clone(obj):
    """A deep copy whose tensors own their arrays (what a checkpoint round trip gives)."""
    if isinstance(obj, ddpgrad.Tensor):
        return ddpgrad.Tensor._make(obj._data.copy())
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.05, momentum=0.9, dampening=0.1),
    lambda ps: Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.01),
    lambda ps: AdamW(ps, lr=0.01),
], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("via", ["clone", "ddpgrad.save"])
def test_state_dict_resume_continues_exactly_like_uninterrupted_run(make, via):
    init = _initial()
    straight = _ours(init)
    _run_ours(make(straight), straight, STEPS)

    first = _ours(init)
    opt = make(first)
    _run_ours(opt, first, 10)
    at_10 = _param_values(first)
    if via == "clone":
        saved = _clone(opt.state_dict())
    else:
        buf = io.BytesIO()
        ddpgrad.save(opt.state_dict(), buf)
        buf.seek(0)
        saved = ddpgrad.load(buf)
    _run_ours(opt, first, 3, start=10)  # the live run moves on; the snapshot must not

    resumed = _ours(at_10)
    opt2 = make(resumed)
    opt2.load_state_dict(saved)
    _run_ours(opt2, resumed, 10, start=10)
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(a._data, b._data)


def test_load_state_dict_copies_into_existing_buffers_and_does_not_alias_the_dict():
    params = _ours(_initial())
    opt = Adam(params, lr=0.01)
    _run_ours(opt, params, 3)
    buffers = {k: id(v._data) for k, v in opt.state[params[0]].items()}
    saved = _clone(opt.state_dict())
    opt.load_state_dict(saved)
    assert {k: id(v._data) for k, v in opt.state[params[0]].items()} == buffers
    before = saved["state"][0]["exp_avg"]._data.copy()
    _run_ours(opt, params, 2, start=3)
    np.testing.assert_array_equal(saved["state"][0]["exp_avg"]._data, before)


def test_load_state_dict_rejects_mismatched_groups():
    params = _ours(_initial())
    saved = SGD(params, lr=0.1).state_dict()
    with pytest.raises(ValueError, match="1 parameter groups, but this optimizer has 2"):
        SGD([{"params": [params[0]]}, {"params": [params[1]]}], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="group 0 has 2 parameters, but this optimizer's group 0 has 1"):
        SGD([params[0]], lr=0.1).load_state_dict(saved)


def test_load_state_dict_restores_hyperparameters():
    params = _ours(_initial())
    saved = Adam(params, lr=0.5, betas=(0.7, 0.8)).state_dict()
    opt = Adam(params, lr=0.01)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["betas"] == (0.7, 0.8)
    assert opt.param_groups[0]["params"][0] is params[0]


def test_zero_grad_set_to_none_drops_gradients():
    params = _ours(_initial())
    opt = SGD(params, lr=0.1)
    _run_ours(opt, params, 1)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_zero_grad_in_place_keeps_the_gradient_arrays():
    params = _ours(_initial())
    opt = SGD(params, lr=0.1)
    _run_ours(opt, params, 1)
    grads = [(p.grad, p.grad._data) for p in params]
    opt.zero_grad(set_to_none=False)
    for p, (g, arr) in zip(params, grads):
        assert p.grad is g and p.grad._data is arr
        assert not arr.any()


def test_parameters_without_gradients_are_skipped_and_frozen_ones_allowed():
    frozen = ddpgrad.tensor(np.ones(3))  # requires_grad=False is allowed, as in PyTorch
    live = ddpgrad.tensor(np.ones(3), requires_grad=True)
    opt = Adam([frozen, live], lr=0.1)
    live.grad = ddpgrad.tensor(np.ones(3))
    opt.step()
    np.testing.assert_array_equal(frozen._data, np.ones(3))
    assert frozen not in opt.state and live in opt.state
    assert not np.allclose(live._data, 1)


def test_step_with_closure_returns_the_loss_and_uses_autograd():
    w = ddpgrad.tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with ddpgrad.no_grad():  # the closure runs with grad enabled regardless
        loss = opt.step(closure)
    assert loss.item() == pytest.approx(5.0)
    np.testing.assert_allclose(w._data, [0.5, -1.0])  # w - 0.25 * 2w


def test_end_to_end_training_through_autograd_matches_pytorch():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 1))
    w0, b0 = rng.standard_normal((4, 1)), np.zeros(1)
    w, b = _ours([w0, b0])
    tw, tb = _theirs([w0, b0])
    opt, topt = AdamW([w, b], lr=0.05), torch.optim.AdamW([tw, tb], lr=0.05, foreach=False)
    xs, txs = ddpgrad.tensor(x), torch.tensor(x)
    for _ in range(STEPS):
        opt.zero_grad()
        ((ddpgrad.tanh(xs @ w + b) - ddpgrad.tensor(y)) ** 2).mean().backward()
        opt.step()
        topt.zero_grad()
        ((torch.tanh(txs @ tw + tb) - torch.tensor(y)) ** 2).mean().backward()
        topt.step()
    _assert_same([w, b], [tw, tb])


# ------------------------------------------------------------------ in place, no allocation

@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.01),
    lambda ps: SGD(ps, lr=0.01, momentum=0.9),
    lambda ps: SGD(ps, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
    lambda ps: Adam(ps, lr=0.01),
    lambda ps: Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True),
    lambda ps: AdamW(ps, lr=0.01),
], ids=["sgd", "sgd-momentum", "sgd-all", "adam", "adam-all", "adamw"])
def test_steps_update_in_place_without_allocating_after_the_first(make):
    n = 256
    w = ddpgrad.tensor(np.random.default_rng(3).standard_normal((n, n)), requires_grad=True)
    w.grad = ddpgrad.tensor(np.full((n, n), 0.5))
    opt = make([w])
    array, version = w._data, w._version
    opt.step()
    buffers = [id(v._data) for v in opt.state.get(w, {}).values()]
    nbytes = array.nbytes

    # control: the measurement sees one parameter-sized temporary
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    _ = array * 2.0
    control_peak = tracemalloc.get_traced_memory()[1] - base
    del _
    tracemalloc.stop()
    assert control_peak >= nbytes

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(3):
        opt.step()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert peak < nbytes // 20, f"a step allocated {peak} bytes (parameter: {nbytes})"
    assert w._data is array
    assert [id(v._data) for v in opt.state.get(w, {}).values()] == buffers
    assert w._version == version + 4


def test_gradient_views_into_a_flat_buffer_are_read_not_written():
    shapes = [(4, 3), (5,)]
    flat = np.arange(2 * 17, dtype=np.float64) / 10
    views = [flat[0:24:2].reshape(4, 3), flat[24:34:2]]  # strided views, as a reducer might hand out
    init = [np.ones(s) for s in shapes]
    ours, theirs = _ours(init), _theirs(init)
    for p, v in zip(ours, views):
        p.grad = ddpgrad.Tensor._make(v)
    for p, v in zip(theirs, views):
        p.grad = torch.from_numpy(v.copy())
    before = flat.copy()
    opt = Adam(ours, lr=0.1, weight_decay=0.1, maximize=True)
    topt = torch.optim.Adam(theirs, lr=0.1, weight_decay=0.1, maximize=True, foreach=False)
    for _ in range(3):
        opt.step()
        topt.step()
    np.testing.assert_array_equal(flat, before)
    assert all(p.grad._data.base is flat for p in ours)
    _assert_same(ours, theirs)


def test_float32_parameters_stay_float32():
    w = ddpgrad.tensor(np.ones((3, 3), dtype=np.float32), requires_grad=True)
    w.grad = ddpgrad.tensor(np.ones((3, 3), dtype=np.float32))
    opt = Adam([w], lr=0.1)
    opt.step()
    assert w.dtype == ddpgrad.float32
    assert all(v.dtype == ddpgrad.float32 for k, v in opt.state[w].items() if k != "step")


# ------------------------------------------------------------------ errors

def test_empty_parameter_list_is_an_error():
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        SGD([], lr=0.1)


def test_non_leaf_tensor_is_an_error():
    w = ddpgrad.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        Adam([w * 2])


def test_single_tensor_and_non_tensor_params_are_errors():
    w = ddpgrad.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        SGD(w)
    with pytest.raises(TypeError, match="can only optimize Tensors, but one of the params is ndarray"):
        SGD([np.ones(2)])
    with pytest.raises(TypeError, match="ordered collections"):
        SGD({w})


def test_a_parameter_given_twice_is_an_error():
    w, v = (ddpgrad.tensor(np.ones(2), requires_grad=True) for _ in range(2))
    with pytest.raises(ValueError, match="duplicate parameters"):
        SGD([w, v, w])
    opt = SGD([w])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [v, w]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("make, message", [
    (lambda ps: SGD(ps, lr=-0.1), "Invalid learning rate: -0.1"),
    (lambda ps: SGD(ps, momentum=-0.5), "Invalid momentum value: -0.5"),
    (lambda ps: SGD(ps, weight_decay=-1), "Invalid weight_decay value: -1"),
    (lambda ps: SGD(ps, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (lambda ps: SGD(ps, momentum=0.9, dampening=0.1, nesterov=True), "dampening=0.1"),
    (lambda ps: Adam(ps, lr=-1e-3), "Invalid learning rate: -0.001"),
    (lambda ps: Adam(ps, eps=-1e-8), "Invalid epsilon value: -1e-08"),
    (lambda ps: Adam(ps, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (lambda ps: Adam(ps, betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    (lambda ps: AdamW(ps, weight_decay=-0.01), "Invalid weight_decay value: -0.01"),
    (lambda ps: SGD([{"params": ps, "lr": -2.0}], lr=0.1), "Invalid learning rate: -2.0"),
])
def test_invalid_hyperparameters_name_the_value(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        make([ddpgrad.tensor(np.ones(2), requires_grad=True)])


@pytest.mark.parametrize("make_ours, make_theirs", [
    (lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (lambda p: SGD(p, lr=0.05, momentum=0.8, dampening=0.3, maximize=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.3, maximize=True)),
    (lambda p: Adam(p, lr=0.01, amsgrad=True, weight_decay=0.02),
     lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=0.02)),
    (lambda p: AdamW(p, lr=0.01), lambda p: torch.optim.AdamW(p, lr=0.01)),
])
def test_large_parameters_updated_piece_by_piece_match_pytorch(make_ours, make_theirs):
    """Parameters larger than CHUNK_ELEMENTS (and not a multiple of it) go through the chunked path."""
    from ddpgrad.optim.optimizer import CHUNK_ELEMENTS

    rng = np.random.default_rng(5)
    init = rng.standard_normal(2 * CHUNK_ELEMENTS + 12345)
    ours, theirs = _ours([init]), _theirs([init])
    opt_ours, opt_theirs = make_ours(ours), make_theirs(theirs)
    for step in range(5):
        g = np.cos(ours[0]._data) + 0.1 * step
        ours[0].grad = ddpgrad.tensor(g)
        theirs[0].grad = torch.from_numpy(np.cos(theirs[0].detach().numpy()) + 0.1 * step)
        opt_ours.step()
        opt_theirs.step()
    _assert_same(ours, theirs)
