"""GPU single-process step: MLP 784-1024-1024-10, batch 256, float32, SGD momentum 0.9.

ddpgrad on CuPy vs PyTorch CUDA eager, on the same GPU, interleaved (A B A B ...), medians.
Prints one JSON line per figure. Run on a machine with a GPU: python benchmarks/bench_gpu.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

BATCH, SIZES, STEPS_PER_SAMPLE, ROUNDS = 256, (784, 1024, 1024, 10), 50, 7


def ddpgrad_runner():
    import ddpgrad
    import ddpgrad.nn as nn
    import ddpgrad.nn.functional as F

    ddpgrad.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)).to("cuda")
    opt = ddpgrad.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = ddpgrad.tensor(rng.standard_normal((BATCH, 784), dtype=np.float32), device="cuda")
    y = ddpgrad.tensor(rng.integers(0, 10, BATCH), device="cuda")
    sync = ddpgrad.cuda.synchronize

    def run(steps):
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        sync()

    return run


def torch_runner():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                torch.nn.ReLU(), torch.nn.Linear(1024, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(BATCH, 784, device="cuda")
    y = torch.randint(0, 10, (BATCH,), device="cuda")

    def run(steps):
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        torch.cuda.synchronize()

    return run


def main():
    import cupy
    import torch

    runners = {"ddpgrad": ddpgrad_runner(), "torch": torch_runner()}
    for run in runners.values():
        run(10)  # warm-up: kernels compiled, memory pools filled
    times = {name: [] for name in runners}
    for _ in range(ROUNDS):
        for name, run in runners.items():
            start = time.perf_counter()
            run(STEPS_PER_SAMPLE)
            times[name].append((time.perf_counter() - start) / STEPS_PER_SAMPLE)
    med = {k: statistics.median(v) for k, v in times.items()}
    record = {
        "figure": "gpu_single_process_step", "model": "784-1024-1024-10", "batch": BATCH, "dtype": "float32",
        "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "cupy": cupy.__version__,
        "torch": torch.__version__, "rounds": ROUNDS, "steps_per_sample": STEPS_PER_SAMPLE,
        "ddpgrad_ms": round(1e3 * med["ddpgrad"], 4), "torch_ms": round(1e3 * med["torch"], 4),
        "ratio_ddpgrad_over_torch": round(med["ddpgrad"] / med["torch"], 3),
    }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
