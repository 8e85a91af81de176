"""Figure 2: the overhead-bound step. The README quickstart network (Linear(10, 20), ReLU,
Linear(20, 1), MSELoss, SGD lr 0.01), batch 100: nearly all of a step is Python and per-op
dispatch, so this measures the framework, not BLAS. ddpgrad vs PyTorch (the target), plus the
hand-written NumPy step for scale.

    python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import argparse

import common

TARGET_VS_TORCH = 1.5


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--inner", type=int, default=200, help="steps per timed run")
    a = p.parse_args(argv)
    common.set_blas_threads(a.threads)

    import numpy as np
    import torch

    import ddpgrad
    import ddpgrad.nn as nn
    import workloads as wl

    torch.set_num_threads(a.threads)
    common.emit(common.machine_record())

    weights = wl.make_weights(wl.TINY_SIZES)
    batches = wl.make_regression_batches(a.batch)

    model = wl.ddpgrad_mlp(weights)
    opt = ddpgrad.optim.SGD(model.parameters(), lr=wl.LR)
    dd_step = wl.ddpgrad_step(model, opt, nn.MSELoss())
    tmodel = wl.torch_mlp(weights)
    topt = torch.optim.SGD(tmodel.parameters(), lr=wl.LR)
    t_step = wl.ddpgrad_step(tmodel, topt, torch.nn.MSELoss())
    floor = wl.NumpyTiny(weights, a.batch)
    dd_batches, t_batches = wl.ddpgrad_tensors(batches), wl.torch_tensors(batches)

    losses = {"numpy": [], "ddpgrad": [], "torch": []}
    for k in range(3):
        floor.step(*batches[k])
        losses["numpy"].append(floor.loss)
        losses["ddpgrad"].append(float(dd_step(*dd_batches[k]).item()))
        losses["torch"].append(float(t_step(*t_batches[k]).item()))
    agree = bool(np.allclose(losses["ddpgrad"], losses["torch"], rtol=1e-4)
                 and np.allclose(losses["numpy"], losses["torch"], rtol=1e-4)
                 and np.allclose(model[0].weight._data, tmodel[0].weight.detach().numpy(), atol=1e-6))

    cyc_np, cyc_dd, cyc_t = wl.Cycle(batches), wl.Cycle(dd_batches), wl.Cycle(t_batches)
    stats = common.interleaved(
        {"ddpgrad": lambda: dd_step(*cyc_dd()),
         "torch": lambda: t_step(*cyc_t()),
         "numpy": lambda: floor.step(*cyc_np())},
        rounds=a.rounds, inner=a.inner, warmup=1)
    common.emit(common.result("overhead", "overhead-bound step (10-20-1, batch 100): ddpgrad/PyTorch",
                              stats, "ddpgrad", "torch", TARGET_VS_TORCH, batch=a.batch,
                              same_model=agree, losses=losses))
    common.emit(common.result("overhead", "overhead-bound step (10-20-1, batch 100): ddpgrad/NumPy floor",
                              stats, "ddpgrad", "numpy", None, batch=a.batch))


if __name__ == "__main__":
    main()
