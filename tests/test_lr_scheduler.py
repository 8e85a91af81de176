"""Learning-rate schedulers: the lr sequence of every scheduler equals PyTorch's, and resumes."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

import ddpgrad
from ddpgrad.optim import SGD, lr_scheduler

torch = pytest.importorskip("torch", reason="PyTorch (CPU) is the parity oracle: pip install torch==2.13.0")

STEPS = 30
LRS = (0.1, 0.05)  # two parameter groups with different initial lrs


class Halving:
    """A callable object: its state (``__dict__``) is saved, unlike a lambda's."""

    def __init__(self, every):
        self.every = every

    def __call__(self, epoch):
        return 0.5 ** (epoch // self.every)


def _sequential(lib, opt):
    warmup = lib.LinearLR(opt, start_factor=0.1, total_iters=5)
    cosine = lib.CosineAnnealingLR(opt, T_max=20, eta_min=1e-4)
    return lib.SequentialLR(opt, [warmup, cosine], milestones=[5])


CASES = {
    "step": lambda lib, opt: lib.StepLR(opt, step_size=7, gamma=0.5),
    "multistep": lambda lib, opt: lib.MultiStepLR(opt, milestones=[3, 8, 8, 20], gamma=0.3),
    "cosine": lambda lib, opt: lib.CosineAnnealingLR(opt, T_max=10, eta_min=0.001),
    "cosine-odd": lambda lib, opt: lib.CosineAnnealingLR(opt, T_max=7),
    "lambda": lambda lib, opt: lib.LambdaLR(opt, lambda e: 0.95**e),
    "lambda-per-group": lambda lib, opt: lib.LambdaLR(opt, [lambda e: 1 / (1 + e), Halving(4)]),
    "linear-warmup": lambda lib, opt: lib.LinearLR(opt, start_factor=0.25, total_iters=6),
    "linear-decay": lambda lib, opt: lib.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=10),
    "exponential": lambda lib, opt: lib.ExponentialLR(opt, gamma=0.9),
    "constant": lambda lib, opt: lib.ConstantLR(opt, factor=0.5, total_iters=4),
    "multiplicative": lambda lib, opt: lib.MultiplicativeLR(opt, lambda e: 0.97),
    "sequential": _sequential,
}


def _ours():
    params = [ddpgrad.tensor(np.ones(2), requires_grad=True) for _ in LRS]
    return SGD([{"params": [p], "lr": lr} for p, lr in zip(params, LRS)], lr=1.0)


def _theirs():
    params = [torch.ones(2, requires_grad=True) for _ in LRS]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, LRS)], lr=1.0)


def _sequence(sched, opt, steps):
    lrs = [list(sched.get_last_lr())]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(list(sched.get_last_lr()))
        assert lrs[-1] == [g["lr"] for g in opt.param_groups]
    return np.array(lrs)


@pytest.mark.parametrize("name", CASES)
def test_lr_sequence_matches_pytorch(name):
    opt, topt = _ours(), _theirs()
    ours = _sequence(CASES[name](lr_scheduler, opt), opt, STEPS)
    theirs = _sequence(CASES[name](torch.optim.lr_scheduler, topt), topt, STEPS)
    np.testing.assert_array_equal(ours, theirs)  # bitwise: same formulas, same order
    assert len(set(ours[:, 0])) > 1  # the schedule did change the lr
    assert [g["initial_lr"] for g in opt.param_groups] == list(LRS)


def test_cosine_follows_pytorch_recursion_over_many_periods():
    opt, topt = _ours(), _theirs()
    ours = _sequence(lr_scheduler.CosineAnnealingLR(opt, T_max=13, eta_min=0.002), opt, 200)
    theirs = _sequence(torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=13, eta_min=0.002), topt, 200)
    np.testing.assert_array_equal(ours, theirs)  # bitwise: same formulas, same order


def test_constructor_performs_the_initial_step():
    opt = _ours()
    sched = lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=4)
    assert sched.last_epoch == 0
    assert sched.get_last_lr() == [0.05, 0.025]
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.025]


def _roundtrip(state, via):
    if via == "dict":
        return state
    buf = io.BytesIO()
    ddpgrad.save(state, buf)
    buf.seek(0)
    return ddpgrad.load(buf)


@pytest.mark.parametrize("via", ["dict", "ddpgrad.save"])
@pytest.mark.parametrize("name", CASES)
def test_state_dict_resume_continues_the_same_sequence(name, via):
    opt = _ours()
    straight = _sequence(CASES[name](lr_scheduler, opt), opt, STEPS)

    opt = _ours()
    sched = CASES[name](lr_scheduler, opt)
    _sequence(sched, opt, 12)
    opt_state = _roundtrip(opt.state_dict(), via)
    sched_state = _roundtrip(sched.state_dict(), via)

    opt2 = _ours()
    sched2 = CASES[name](lr_scheduler, opt2)  # build first, then load (as in PyTorch)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert sched2.last_epoch == 12
    resumed = _sequence(sched2, opt2, STEPS - 12)
    np.testing.assert_array_equal(resumed, straight[12:])


def test_lambda_state_dict_skips_functions_but_keeps_callable_objects():
    opt = _ours()
    halving = Halving(4)
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 1.0, halving])
    state = sched.state_dict()
    assert "optimizer" not in state
    assert state["lr_lambdas"] == [None, {"every": 4}]
    halving.every = 99
    sched.load_state_dict(state)
    assert halving.every == 4


def test_resuming_with_last_epoch_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(_ours(), step_size=2, last_epoch=5)


def test_schedulers_reject_bad_arguments():
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 1"):
        lr_scheduler.LambdaLR(_ours(), [lambda e: 1.0])
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        lr_scheduler.LinearLR(_ours(), start_factor=0)


def test_cosine_closed_form_matches_recursion_at_the_same_epoch():
    opt = _ours()
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        sched.step()
    recursive = sched.get_last_lr()
    closed = [0.5 * lr * (1 + math.cos(math.pi * 4 / 10)) for lr in LRS]
    np.testing.assert_allclose(recursive, closed, rtol=1e-12)


RESUMABLE = {
    "linear": lambda lib, opt: lib.LinearLR(opt, start_factor=0.25, total_iters=6, last_epoch=3),
    "cosine": lambda lib, opt: lib.CosineAnnealingLR(opt, T_max=10, last_epoch=3),
    "step": lambda lib, opt: lib.StepLR(opt, step_size=3, gamma=0.5, last_epoch=3),
    "exponential": lambda lib, opt: lib.ExponentialLR(opt, gamma=0.9, last_epoch=3),
}


@pytest.mark.parametrize("name", RESUMABLE)
def test_constructing_with_last_epoch_matches_pytorch(name):
    opt, topt = _ours(), _theirs()
    for o in (opt, topt):
        for group in o.param_groups:
            group["initial_lr"] = group["lr"]
    ours = _sequence(RESUMABLE[name](lr_scheduler, opt), opt, 12)
    theirs = _sequence(RESUMABLE[name](torch.optim.lr_scheduler, topt), topt, 12)
    np.testing.assert_array_equal(ours, theirs)
