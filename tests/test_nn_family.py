"""The new activation layers and losses against PyTorch (float64, forward and backward, gradcheck)."""

from __future__ import annotations

import numpy as np
import pytest

import ddpgrad
from op_helpers import TORCH_REASON, helper_test_op

torch = pytest.importorskip("torch", reason=TORCH_REASON)


def _nn(x):
    return torch.nn if isinstance(x, torch.Tensor) else ddpgrad.nn


LAYERS = {
    "SiLU": lambda nn: nn.SiLU(),
    "Mish": lambda nn: nn.Mish(),
    "Softplus": lambda nn: nn.Softplus(beta=1.5, threshold=2.0),
    "LeakyReLU": lambda nn: nn.LeakyReLU(0.05),
    "ELU": lambda nn: nn.ELU(alpha=0.5),
    "CELU": lambda nn: nn.CELU(alpha=2.0),
    "SELU": lambda nn: nn.SELU(),
    "Hardtanh": lambda nn: nn.Hardtanh(-0.5, 1.5),
    "ReLU6": lambda nn: nn.ReLU6(),
    "Hardswish": lambda nn: nn.Hardswish(),
    "LogSigmoid": lambda nn: nn.LogSigmoid(),
    "Softsign": lambda nn: nn.Softsign(),
    "Tanhshrink": lambda nn: nn.Tanhshrink(),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_activation_layer_matches_torch(name):
    helper_test_op([(3, 5)], lambda x: LAYERS[name](_nn(x))(x * 3), low=-3, high=3)


def test_activation_layer_repr_shows_its_arguments():
    assert repr(ddpgrad.nn.LeakyReLU(0.2)) == repr(torch.nn.LeakyReLU(0.2))
    assert repr(ddpgrad.nn.ELU(alpha=0.5)) == repr(torch.nn.ELU(alpha=0.5))


PROBABILITY_LOSSES = {
    "BCELoss": lambda nn, x, t: nn.BCELoss()(x, t),
    "BCELoss_sum": lambda nn, x, t: nn.BCELoss(reduction="sum")(x, t),
    "BCELoss_weight": lambda nn, x, t: nn.BCELoss(weight=(t * 0 + 0.5).detach(), reduction="none")(x, t),
    "KLDivLoss_batchmean": lambda nn, x, t: nn.KLDivLoss(reduction="batchmean")(x.log(), t),
    "KLDivLoss_sum": lambda nn, x, t: nn.KLDivLoss(reduction="sum")(x.log(), t),
    "KLDivLoss_log_target": lambda nn, x, t: nn.KLDivLoss(reduction="batchmean", log_target=True)(x.log(), t.log()),
}


@pytest.mark.parametrize("name", list(PROBABILITY_LOSSES))
def test_probability_loss_matches_torch(name):
    fn = PROBABILITY_LOSSES[name]
    helper_test_op([(4, 3), (4, 3)], lambda x, t: fn(_nn(x), x, t), low=0.05, high=0.95)


REGRESSION_LOSSES = {
    "HuberLoss": lambda nn, x, t: nn.HuberLoss()(x, t),
    "HuberLoss_delta": lambda nn, x, t: nn.HuberLoss(reduction="sum", delta=0.5)(x, t),
    "SmoothL1Loss": lambda nn, x, t: nn.SmoothL1Loss()(x, t),
    "SmoothL1Loss_beta": lambda nn, x, t: nn.SmoothL1Loss(reduction="none", beta=0.3)(x, t),
    "smooth_l1_loss": lambda nn, x, t: nn.functional.smooth_l1_loss(x, t, beta=2.0),
    "SoftMarginLoss": lambda nn, x, t: nn.SoftMarginLoss()(x, t.sign().detach()),
    "MarginRankingLoss": lambda nn, x, t: nn.MarginRankingLoss(margin=0.2)(x, t, (x - t).sign().detach() * -1),
    "CosineEmbeddingLoss": lambda nn, x, t: nn.CosineEmbeddingLoss(margin=0.1)(
        x, t, (x[:, 0] > 0).double() * 2 - 1),
    "GaussianNLLLoss": lambda nn, x, t: nn.GaussianNLLLoss()(x, t, x.detach() * 0 + 0.7),
    "PoissonNLLLoss": lambda nn, x, t: nn.PoissonNLLLoss()(x, t.abs()),
    "cosine_similarity": lambda nn, x, t: nn.functional.cosine_similarity(x, t),
    "normalize": lambda nn, x, t: nn.functional.normalize(x, dim=0) + t,
}


@pytest.mark.parametrize("name", list(REGRESSION_LOSSES))
def test_regression_loss_matches_torch(name):
    fn = REGRESSION_LOSSES[name]
    helper_test_op([(4, 3), (4, 3)], lambda x, t: fn(_nn(x), x, t), low=-2, high=2)


def test_clip_grad_value_clamps_like_torch():
    grads = np.linspace(-3, 3, 7)
    results = []
    for lib in (torch, ddpgrad):
        w = lib.tensor(np.zeros(7), requires_grad=True)
        (w * lib.tensor(grads)).sum().backward()
        lib.nn.utils.clip_grad_value_([w], 1.5)
        results.append(w.grad.numpy().copy())
    np.testing.assert_array_equal(results[1], results[0])


def test_relu_inplace_writes_into_its_input():
    x = ddpgrad.tensor([-1.0, 2.0])
    out = ddpgrad.nn.ReLU(inplace=True)(x)
    assert out is x and x.tolist() == [0.0, 2.0] and x._version == 1
