"""Figure 5: peak resident memory (VmHWM) per rank of a training run, each measured in a fresh
process: ddpgrad vs the hand-written NumPy floor on the same data, in one process (the
single-process step of figure 1, batch 256) and on 2 MPI ranks (the data-parallel step of
figure 3, batch 128 per rank, the floor with one raw Allreduce). PyTorch is measured for scale.

    python benchmarks/bench_memory.py                            # all measurements, then ratios
    python benchmarks/bench_memory.py --impl ddpgrad --mode single   # one measurement
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import common

TARGET_VS_FLOOR = 1.25
IMPLS = ("floor", "ddpgrad", "torch")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impl", choices=IMPLS, help="measure one implementation (in this process)")
    p.add_argument("--mode", choices=("single", "ddp"), default="single")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per measurement (driver)")
    p.add_argument("--np", type=int, default=2, help="ranks in ddp mode")
    return p.parse_args(argv)


def measure(a):
    """Train ``a.steps`` steps with one implementation; print this process's (rank's) memory."""
    common.set_blas_threads(1)
    import workloads as wl  # imports NumPy

    rank, size = 0, 1
    world = MPI = None
    if a.mode == "ddp":
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        rank, size = world.Get_rank(), world.Get_size()
    if a.impl == "ddpgrad":
        import ddpgrad
        import ddpgrad.distributed as dist
        import ddpgrad.nn.functional as F
        from ddpgrad.nn.parallel import DistributedDataParallel as DDP
    elif a.impl == "torch":
        import torch

        torch.set_num_threads(1)
    after_import = common.current_rss_mb()

    batch = 256 if a.mode == "single" else 128
    weights = wl.make_weights(wl.MLP_SIZES)
    global_batches = wl.make_classification_batches(batch * size)
    lo, hi = rank * batch, (rank + 1) * batch
    batches = [(x[lo:hi].copy(), y[lo:hi].copy()) for x, y in global_batches]
    del global_batches

    if a.impl == "floor":
        allreduce = None
        if size > 1:
            def allreduce(buf):
                world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        floor = wl.NumpyMLP(weights, batch, world_size=size, allreduce=allreduce)
        data = batches

        def step(x, y):
            floor.step(x, y)
    elif a.impl == "ddpgrad":
        model = wl.ddpgrad_mlp(weights)
        if a.mode == "ddp":
            dist.init_process_group()
            model = DDP(model)
        opt = ddpgrad.optim.SGD(model.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
        step = wl.ddpgrad_step(model, opt, F.cross_entropy)
        data = wl.ddpgrad_tensors(batches)
    else:
        if a.mode == "ddp":
            import torch.distributed as tdist

            port = world.bcast(common.free_port() if rank == 0 else None, root=0)
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                              WORLD_SIZE=str(size))
            tdist.init_process_group("gloo", init_method="env://")
        model = wl.torch_mlp(weights)
        if a.mode == "ddp":
            model = torch.nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(model.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
        step = wl.ddpgrad_step(model, opt, torch.nn.functional.cross_entropy)
        data = wl.torch_tensors(batches)
    del weights, batches

    cyc = wl.Cycle(data)
    for _ in range(a.steps):
        step(*cyc())
    rec = {"impl": a.impl, "mode": a.mode, "rank": rank, "peak_rss_mb": round(common.peak_rss_mb(), 2),
           "rss_after_import_mb": round(after_import, 2)}
    if world is not None:
        everyone = world.gather(rec, root=0)
        if rank == 0:
            worst = max(everyone, key=lambda r: r["peak_rss_mb"])
            rec = dict(worst, ranks=size, per_rank_peak_mb=[r["peak_rss_mb"] for r in everyone])
            print(json.dumps(rec), flush=True)
        if a.impl == "torch":
            tdist.destroy_process_group()
    else:
        print(json.dumps(rec), flush=True)


def run_one(impl, mode, a):
    here = os.path.abspath(__file__)
    args = ["--impl", impl, "--mode", mode, "--steps", str(a.steps)]
    cmd = common.mpi_command(here, a.np, args) if mode == "ddp" else [sys.executable, here, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"memory measurement {impl}/{mode} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if a.impl is not None:
        return measure(a)
    common.set_blas_threads(1)
    common.emit(common.machine_record())
    for mode in ("single", "ddp"):
        runs = {impl: [] for impl in IMPLS}
        for _ in range(a.repeats):  # fresh processes, interleaved
            for impl in IMPLS:
                runs[impl].append(run_one(impl, mode, a))
        # the lowest of the repeats: page-cache and allocator noise only ever adds
        best = {impl: min(rs, key=lambda r: r["peak_rss_mb"]) for impl, rs in runs.items()}
        peak = {impl: r["peak_rss_mb"] for impl, r in best.items()}
        base = {impl: r["rss_after_import_mb"] for impl, r in best.items()}
        grown = {impl: round(peak[impl] - base[impl], 2) for impl in IMPLS}
        label = "1 process, batch 256" if mode == "single" else f"{a.np} ranks x 128, per rank"
        ratio = peak["ddpgrad"] / peak["floor"]
        common.emit({
            "kind": "result", "figure": "memory", "name": f"peak memory ({label}): ddpgrad/NumPy floor",
            "ratio": round(ratio, 4), "ratio_of": "ddpgrad/floor", "target": TARGET_VS_FLOOR,
            "met": bool(ratio <= TARGET_VS_FLOOR), "peak_rss_mb": peak, "rss_after_import_mb": base,
            "peak_minus_import_mb": grown,
            "ratio_above_import": round(grown["ddpgrad"] / grown["floor"], 4) if grown["floor"] > 0 else None,
            "runs": {impl: [r["peak_rss_mb"] for r in rs] for impl, rs in runs.items()},
            "steps": a.steps, "mode": mode, "blas": common.blas_summary()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
