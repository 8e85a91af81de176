"""Figure 3: the data-parallel step. The 784-1024-1024-10 MLP on N ranks (default 2) x batch 128,
one BLAS thread per rank, all three candidates in the same MPI job, interleaved:

- ddpgrad: ``DistributedDataParallel`` over MPI (bucketed, overlapped with backward);
- floor: the hand-written NumPy step plus one raw ``MPI.Allreduce`` of all gradients, which sit
  in a single flat buffer (the division by the world size is folded into the loss gradient);
- PyTorch: ``torch.nn.parallel.DistributedDataParallel`` with the gloo backend, initialised via
  env:// on 127.0.0.1 with RANK/WORLD_SIZE taken from the MPI launcher (PMI_RANK/PMI_SIZE).

A run's time is the slowest rank's, every run starts after a barrier.

    python benchmarks/bench_ddp.py            # starts itself under mpiexec -n 2
    mpiexec -n 2 python benchmarks/bench_ddp.py
"""

from __future__ import annotations

import argparse
import os
import sys

import common

TARGET_VS_FLOOR = 1.15
TARGET_VS_TORCH = 0.70


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--np", type=int, default=2, help="ranks, when this script starts mpiexec itself")
    p.add_argument("--batch", type=int, default=128, help="per-rank batch")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inner", type=int, default=5, help="steps per timed run")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch DDP out (scaling runs)")
    p.add_argument("--figure", default="ddp", help="figure name in the JSON lines")
    return p.parse_args(argv)


def setup_torch_distributed(world, rank, size):
    """gloo over TCP on 127.0.0.1, rendezvous env:// with rank and size from the MPI launcher."""
    import torch.distributed as tdist

    port = os.environ.get("MASTER_PORT") or world.bcast(common.free_port() if rank == 0 else None, root=0)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(size)
    tdist.init_process_group("gloo", init_method="env://")
    return tdist


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if not common.under_mpi():
        return common.relaunch_under_mpi(os.path.abspath(__file__), a.np, argv)
    common.set_blas_threads(1)

    import numpy as np
    from mpi4py import MPI

    import ddpgrad
    import ddpgrad.distributed as dist
    import ddpgrad.nn.functional as F
    import workloads as wl
    from ddpgrad.nn.parallel import DistributedDataParallel as DDP

    world = MPI.COMM_WORLD.Dup()
    rank, size = world.Get_rank(), world.Get_size()
    use_torch = not a.no_torch
    if use_torch:
        import torch

        torch.set_num_threads(1)
        tdist = setup_torch_distributed(world, rank, size)
    dist.init_process_group()
    if rank == 0:
        common.emit(common.machine_record())

    weights = wl.make_weights(wl.MLP_SIZES)
    global_batches = wl.make_classification_batches(a.batch * size)
    lo, hi = rank * a.batch, (rank + 1) * a.batch
    batches = [(x[lo:hi].copy(), y[lo:hi].copy()) for x, y in global_batches]

    def raw_allreduce(buf):
        world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    floor = wl.NumpyMLP(weights, a.batch, world_size=size, allreduce=raw_allreduce if size > 1 else None)
    model = DDP(wl.ddpgrad_mlp(weights))
    opt = ddpgrad.optim.SGD(model.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
    dd_step = wl.ddpgrad_step(model, opt, F.cross_entropy)
    candidates_setup = {"ddpgrad": (dd_step, wl.ddpgrad_tensors(batches)),
                        "floor": (lambda x, y: floor.step(x, y), batches)}
    if use_torch:
        tmodel = torch.nn.parallel.DistributedDataParallel(wl.torch_mlp(weights))
        topt = torch.optim.SGD(tmodel.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
        candidates_setup["torch"] = (wl.ddpgrad_step(tmodel, topt, torch.nn.functional.cross_entropy),
                                     wl.torch_tensors(batches))

    # Same training? Three steps each; compare with one process on the global batch.
    reference = wl.NumpyMLP(weights, a.batch * size)
    for k in range(3):
        reference.step(*global_batches[k])
        for step, data in candidates_setup.values():
            step(*data[k])
    ref_w = reference.W[0]
    finals = {"ddpgrad": model.module[0].weight._data, "floor": floor.W[0]}
    if use_torch:
        finals["torch"] = tmodel.module[0].weight.detach().numpy()
    matches = {k: bool(np.allclose(w, ref_w, atol=1e-5)) for k, w in finals.items()}
    matches = world.allreduce(matches, op=lambda x, y, _=None: {k: x[k] and y[k] for k in x})

    candidates = {}
    for name, (step, data) in candidates_setup.items():
        cyc = wl.Cycle(data)
        candidates[name] = (lambda step=step, cyc=cyc: step(*cyc()))
    wait0, steps0 = model.reducer.comm_wait_s, model.reducer.step
    stats = common.interleaved(candidates, rounds=a.rounds, inner=a.inner, warmup=1,
                               before=world.Barrier,
                               combine=lambda t: world.allreduce(t, op=MPI.MAX))
    wait_ms = (model.reducer.comm_wait_s - wait0) / max(1, model.reducer.step - steps0) * 1e3
    wait_ms = world.allreduce(wait_ms, op=MPI.MAX)
    samples_per_s = {k: round(a.batch * size / v["median_s"], 1) for k, v in stats.items()}

    if rank == 0:
        extra = dict(ranks=size, batch_per_rank=a.batch, matches_global_batch=matches,
                     ddpgrad_end_of_backward_wait_ms=round(wait_ms, 3), samples_per_s=samples_per_s,
                     buckets=[round(b.buffer.nbytes / 1e6, 3) for b in model.reducer.buckets])
        common.emit(common.result(a.figure, f"data-parallel step, {size} ranks x {a.batch}: ddpgrad/(NumPy + raw Allreduce)",
                                  stats, "ddpgrad", "floor", TARGET_VS_FLOOR if size == 2 else None, **extra))
        if use_torch:
            common.emit(common.result(a.figure, f"data-parallel step, {size} ranks x {a.batch}: ddpgrad DDP/PyTorch DDP gloo",
                                      stats, "ddpgrad", "torch", TARGET_VS_TORCH if size == 2 else None,
                                      ranks=size, batch_per_rank=a.batch))
    if use_torch:
        tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
