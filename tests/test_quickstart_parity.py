"""The README quickstart, step for step against PyTorch.

Linear(10, 20) -> ReLU -> Linear(20, 1), MSELoss, SGD(lr=0.01), 1000 full-batch steps on
randn(100, 10) inputs and randn(100, 1) targets. Weights and data come from PyTorch (its seed, its
randn), so the two runs start identical and the loss after every step must agree.
"""

import numpy as np
import pytest

import ddpgrad

torch = pytest.importorskip("torch", reason="PyTorch (CPU) is the parity oracle: pip install torch==2.13.0")

STEPS = 1000
LR = 0.01


def quickstart_model(lib):
    return lib.nn.Sequential(lib.nn.Linear(10, 20), lib.nn.ReLU(), lib.nn.Linear(20, 1))


def train(lib, model, x, y):
    """The quickstart loop, written once for either library; returns the loss before each step."""
    loss_fn = lib.nn.MSELoss()
    optimizer = lib.optim.SGD(model.parameters(), lr=LR)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 1e-4)])
def test_quickstart_loss_matches_pytorch_at_every_step(dtype, rtol):
    torch.manual_seed(0)
    theirs = quickstart_model(torch).to(getattr(torch, dtype))
    x = torch.randn(100, 10, dtype=getattr(torch, dtype))
    y = torch.randn(100, 1, dtype=getattr(torch, dtype))

    ours = quickstart_model(ddpgrad).to(getattr(ddpgrad, dtype))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert all(p.dtype == getattr(ddpgrad, dtype) for p in ours.parameters())

    their_losses = train(torch, theirs, x, y)
    our_losses = train(ddpgrad, ours, ddpgrad.tensor(x.numpy()), ddpgrad.tensor(y.numpy()))

    assert their_losses[-1] < 0.9 * their_losses[0]  # the run really trains
    rel = np.abs(our_losses - their_losses) / np.abs(their_losses)
    worst = int(rel.argmax())
    assert rel[worst] <= rtol, (
        f"step {worst}: ddpgrad loss {our_losses[worst]!r} vs PyTorch {their_losses[worst]!r} "
        f"(relative difference {rel[worst]:.3g} > {rtol:g})"
    )
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=100 * rtol, atol=100 * rtol,
                                   err_msg=name)
