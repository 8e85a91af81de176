"""Where a ddpgrad step's time goes, next to the NumPy floor's: for deciding what to fix.

1. Phases, interleaved with the floor (ratio-of-medians rules as everywhere): zero_grad, forward,
   loss, backward (in DDP split into compute and exposed communication), optimizer step.
2. cProfile of ddpgrad steps: the top functions by own time, as a share of the profiled time.
   NumPy operators (``@``, ``+=``) are not separate entries: their time is the own time of the
   Python function that runs them (``Linear.forward``'s own time is mostly its matmul).

    python benchmarks/profile_step.py --what single          # MLP, batch 256, 1 process
    python benchmarks/profile_step.py --what tiny            # the overhead-bound network
    python benchmarks/profile_step.py --what ddp             # MLP on 2 ranks x 128 (mpiexec)
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time

import common


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", choices=("single", "tiny", "ddp"), default="single")
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inner", type=int, default=5)
    p.add_argument("--profile-steps", type=int, default=40)
    p.add_argument("--top", type=int, default=15)
    return p.parse_args(argv)


class Phases:
    """Per-step durations of named phases: ``mark(name)`` ends the phase called ``name``."""

    def __init__(self):
        self.samples = {}
        self.t = None

    def start(self):
        self.t = time.perf_counter()

    def mark(self, name):
        now = time.perf_counter()
        self.samples.setdefault(name, []).append(now - self.t)
        self.t = now

    def medians_ms(self, skip):
        return {k: round(statistics.median(v[skip:]) * 1e3, 4) for k, v in self.samples.items()}


def top_functions(profile, total_s, steps, n):
    """The ``n`` functions with the most own time, as shares of ``total_s`` and ms per step."""
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, func), (_, calls, own, cumulative, _) in stats.stats.items():
        where = f"{os.path.relpath(filename, common.ROOT)}:{line}({func})" if filename != "~" else func
        rows.append((own, cumulative, calls, where))
    rows.sort(reverse=True)
    return [{"function": where, "own_ms_per_step": round(own / steps * 1e3, 4),
             "own_share": round(own / total_s, 4), "cumulative_share": round(cumulative / total_s, 4),
             "calls": calls} for own, cumulative, calls, where in rows[:n]]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if a.what == "ddp" and not common.under_mpi():
        return common.relaunch_under_mpi(os.path.abspath(__file__), a.np, argv)
    common.set_blas_threads(1)

    import ddpgrad
    import ddpgrad.nn as nn
    import ddpgrad.nn.functional as F
    import workloads as wl

    rank, size, world, MPI = 0, 1, None, None
    if a.what == "ddp":
        from mpi4py import MPI

        import ddpgrad.distributed as dist
        from ddpgrad.nn.parallel import DistributedDataParallel as DDP

        world = MPI.COMM_WORLD.Dup()
        rank, size = world.Get_rank(), world.Get_size()
        dist.init_process_group()
    if rank == 0:
        common.emit(common.machine_record())

    tiny = a.what == "tiny"
    batch = a.batch or (100 if tiny else 256 if a.what == "single" else 128)
    sizes = wl.TINY_SIZES if tiny else wl.MLP_SIZES
    weights = wl.make_weights(sizes)
    if tiny:
        batches = wl.make_regression_batches(batch)
        loss_fn = nn.MSELoss()
        floor = wl.NumpyTiny(weights, batch)
        opt_kw = {}
    else:
        gb = wl.make_classification_batches(batch * size)
        batches = [(x[rank * batch:(rank + 1) * batch].copy(), y[rank * batch:(rank + 1) * batch].copy())
                   for x, y in gb]
        loss_fn = F.cross_entropy
        allreduce = (lambda g: world.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)) if size > 1 else None
        floor = wl.NumpyMLP(weights, batch, world_size=size, allreduce=allreduce)
        opt_kw = {"momentum": wl.MOMENTUM}
    model = wl.ddpgrad_mlp(weights)
    if a.what == "ddp":
        model = DDP(model)
    opt = ddpgrad.optim.SGD(model.parameters(), lr=wl.LR, **opt_kw)
    data = wl.Cycle(wl.ddpgrad_tensors(batches))
    fdata = wl.Cycle(batches)

    dd, fl = Phases(), Phases()
    last_ready = [0.0]
    if a.what == "ddp":
        def mark_ready(_):
            last_ready[0] = time.perf_counter()

        for p in model.parameters():
            p.register_post_accumulate_grad_hook(mark_ready)

    def dd_step():
        x, y = data()
        dd.start()
        opt.zero_grad()
        dd.mark("zero_grad")
        out = model(x)
        dd.mark("forward")
        loss = loss_fn(out, y)
        dd.mark("loss")
        loss.backward()
        if a.what == "ddp":
            end = time.perf_counter()
            dd.samples.setdefault("backward_compute", []).append(last_ready[0] - dd.t)
            dd.samples.setdefault("backward_exposed_comm", []).append(end - last_ready[0])
            dd.t = end
        else:
            dd.mark("backward")
        opt.step()
        dd.mark("optimizer_step")

    def floor_step():
        x, y = fdata()
        fl.start()
        if tiny:
            floor.step(x, y)
            fl.mark("whole_step")
            return
        floor.forward(x, y)
        fl.mark("forward_and_loss")
        floor.backward(x, y)
        fl.mark("backward")
        if floor.allreduce is not None:
            floor.allreduce(floor.grads)
            fl.mark("allreduce")
        floor.update()
        fl.mark("update")

    before = world.Barrier if world is not None else None
    combine = (lambda t: world.allreduce(t, op=MPI.MAX)) if world is not None else None
    stats = common.interleaved({"ddpgrad": dd_step, "floor": floor_step}, rounds=a.rounds,
                               inner=a.inner, warmup=1, before=before, combine=combine)
    skip = a.inner
    phases = {"ddpgrad": dd.medians_ms(skip), "floor": fl.medians_ms(skip)}

    def plain_step():
        x, y = data()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(3):
        plain_step()
    if world is not None:
        world.Barrier()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(a.profile_steps):
        plain_step()
    prof.disable()
    total = time.perf_counter() - t0
    top = top_functions(prof, total, a.profile_steps, a.top)
    if rank == 0:
        rec = common.result("profile", f"profile of the ddpgrad step ({a.what}, batch {batch}"
                            + (f", {size} ranks" if size > 1 else "") + ")", stats, "ddpgrad", "floor",
                            None, phases_ms=phases, profiled_ms_per_step=round(total / a.profile_steps * 1e3, 3),
                            top_own_time=top)
        common.emit(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
