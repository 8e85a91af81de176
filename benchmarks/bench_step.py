"""Figure 1: one training step of the 784-1024-1024-10 MLP (ReLU, cross-entropy, SGD momentum
0.9, batch 256, float32) in one process: ddpgrad vs the hand-written NumPy floor vs PyTorch eager.

    python benchmarks/bench_step.py --threads 1      # and --threads 2

Before timing, three steps from the same weights and data check that the three candidates train
the same model (losses and parameters agree to float32 tolerance).
"""

from __future__ import annotations

import argparse

import common

TARGET_VS_FLOOR = 1.10
TARGET_VS_TORCH = 0.90


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (NumPy) and torch threads")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inner", type=int, default=5, help="steps per timed run")
    a = p.parse_args(argv)
    common.set_blas_threads(a.threads)

    import numpy as np
    import torch

    import ddpgrad
    import ddpgrad.nn.functional as F
    import workloads as wl

    torch.set_num_threads(a.threads)
    common.emit(common.machine_record())

    weights = wl.make_weights(wl.MLP_SIZES)
    batches = wl.make_classification_batches(a.batch)

    floor = wl.NumpyMLP(weights, a.batch)
    model = wl.ddpgrad_mlp(weights)
    opt = ddpgrad.optim.SGD(model.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
    dd_step = wl.ddpgrad_step(model, opt, F.cross_entropy)
    tmodel = wl.torch_mlp(weights)
    topt = torch.optim.SGD(tmodel.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
    t_step = wl.ddpgrad_step(tmodel, topt, torch.nn.functional.cross_entropy)

    dd_batches, t_batches = wl.ddpgrad_tensors(batches), wl.torch_tensors(batches)

    # Same model? Three steps each from the same start.
    losses = {"numpy": [], "ddpgrad": [], "torch": []}
    for k in range(3):
        floor.step(*batches[k])
        losses["numpy"].append(floor.loss)
        losses["ddpgrad"].append(float(dd_step(*dd_batches[k]).item()))
        losses["torch"].append(float(t_step(*t_batches[k]).item()))
    w_floor = floor.W[0]
    w_dd = model[0].weight._data
    w_t = tmodel[0].weight.detach().numpy()
    agree = bool(np.allclose(losses["numpy"], losses["ddpgrad"], rtol=1e-4)
                 and np.allclose(losses["numpy"], losses["torch"], rtol=1e-4)
                 and np.allclose(w_floor, w_dd, atol=1e-5) and np.allclose(w_floor, w_t, atol=1e-5))

    cyc_np, cyc_dd, cyc_t = wl.Cycle(batches), wl.Cycle(dd_batches), wl.Cycle(t_batches)
    stats = common.interleaved(
        {"ddpgrad": lambda: dd_step(*cyc_dd()),
         "numpy": lambda: floor.step(*cyc_np()),
         "torch": lambda: t_step(*cyc_t())},
        rounds=a.rounds, inner=a.inner, warmup=1)

    common.emit(common.result("step", f"single-process step, {a.threads} thread(s): ddpgrad/NumPy floor",
                              stats, "ddpgrad", "numpy", TARGET_VS_FLOOR if a.threads == 1 else None,
                              threads=a.threads, batch=a.batch, same_model=agree, losses=losses))
    common.emit(common.result("step", f"single-process step, {a.threads} thread(s): ddpgrad/PyTorch",
                              stats, "ddpgrad", "torch", TARGET_VS_TORCH if a.threads == 1 else None,
                              threads=a.threads, batch=a.batch))
    common.emit(common.result("step", f"single-process step, {a.threads} thread(s): NumPy floor/PyTorch",
                              stats, "numpy", "torch", None, threads=a.threads, batch=a.batch))


if __name__ == "__main__":
    main()
