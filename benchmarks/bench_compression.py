"""Gradient compression (issue 5): DDP communication hooks that send 16-bit gradients.

Part 1, sync time: the reducer's whole reduction of the 784-1024-1024-10 MLP's filled buckets
(about 1.86M float32 = 7.5 MB), driven as if every gradient became ready at once (as
``bench_sync.py`` does), with no hook vs ``fp16_compress_hook`` vs ``bf16_compress_hook``.
For diagnosis, the pieces: the bare collectives (float32 "sum" of 7.5 MB, the 16-bit "sum_fp16"
/ "sum_bf16" of 3.7 MB, and MPI's built-in C sum of the same 3.7 MB of uint16, i.e. what the
halved bytes cost with a free combine) and the local conversions.

Part 2, the real step on 2 ranks x ``--batch``: step time and the reducer's exposed wait
(``Reducer.comm_wait_s`` per step) with each hook.

Part 3, accuracy: ``examples/train_mlp.py --compress {none,fp16,bf16}`` on 2 ranks, final
validation accuracy (run only when started without mpiexec: it launches its own jobs).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_compression.py          # all three parts
    OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python benchmarks/bench_compression.py   # parts 1-2

Every figure is a ratio of medians of interleaved runs (slowest rank), see ``common.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import common

HOOKS = ("none", "fp16", "bf16")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--batch", type=int, default=128, help="per-rank batch of the step (part 2)")
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds (at least 5)")
    p.add_argument("--inner", type=int, default=5, help="calls per timed run")
    p.add_argument("--no-accuracy", action="store_true", help="skip part 3")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the example (part 3)")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if not common.under_mpi():
        code = common.relaunch_under_mpi(os.path.abspath(__file__), a.np, argv)
        if code == 0 and not a.no_accuracy:
            accuracy(a)
        return code
    common.set_blas_threads(int(os.environ.get("OPENBLAS_NUM_THREADS", "1")))
    timings(a)
    return 0


# ------------------------------------------------------------------------------ parts 1 and 2
def timings(a):
    import numpy as np
    from mpi4py import MPI

    import ddpgrad
    import ddpgrad.distributed as dist
    import ddpgrad.nn.functional as F
    import workloads as wl
    from bench_sync import drive_reducer
    from ddpgrad.autograd import engine
    from ddpgrad.distributed.algorithms.ddp_comm_hooks import default_hooks
    from ddpgrad.distributed.comm.sum16 import (
        bf16_bits_to_float32,
        float_to_bf16_bits,
        float_to_fp16,
        fp16_to_float32,
    )
    from ddpgrad.distributed.process_group import get_comm
    from ddpgrad.nn.parallel import DistributedDataParallel as DDP

    world = MPI.COMM_WORLD.Dup()
    rank, size = world.Get_rank(), world.Get_size()
    dist.init_process_group()
    comm = get_comm()
    if rank == 0:
        common.emit(common.machine_record())
    barrier = world.Barrier
    slowest = lambda t: world.allreduce(t, op=MPI.MAX)  # noqa: E731
    hooks = {"none": None, "fp16": default_hooks.fp16_compress_hook, "bf16": default_hooks.bf16_compress_hook}

    weights = wl.make_weights(wl.MLP_SIZES)
    lo, hi = rank * a.batch, (rank + 1) * a.batch
    batches = [(x[lo:hi].copy(), y[lo:hi].copy()) for x, y in wl.make_classification_batches(a.batch * size)]

    def build(kind):
        model = DDP(wl.ddpgrad_mlp(weights))
        if hooks[kind] is not None:
            model.register_comm_hook(None, hooks[kind])
        opt = ddpgrad.optim.SGD(model.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
        return model, opt

    models = {kind: build(kind) for kind in HOOKS}
    x, y = wl.ddpgrad_tensors(batches)[0]
    for model, _ in models.values():  # first iteration: buckets rebuilt in ready order, filled
        F.cross_entropy(model(x), y).backward()

    # ------------------------------------------------------------ part 1: the reduction alone
    n = wl.n_params()
    grads32 = np.concatenate([b.buffer for b in models["none"][0].reducer.buckets])  # real gradients
    pristine = {"f32": grads32, "fp16": grads32.astype(np.float16), "bf16": float_to_bf16_bits(grads32)}
    wire32, wire16, wirebf16, bits16 = (pristine[k].copy() for k in ("f32", "fp16", "bf16", "bf16"))

    def reset_and_barrier():
        """Untimed, before each run: the bare sums grow the buffers (x ranks per call), so each run
        starts from the original gradients (at most 2**inner growth: no float16 overflow)."""
        for buf, key in ((wire32, "f32"), (wire16, "fp16"), (wirebf16, "bf16"), (bits16, "bf16")):
            np.copyto(buf, pristine[key])
        barrier()

    candidates = {f"sync_{kind}": (lambda r=model.reducer: drive_reducer(r, engine))
                  for kind, (model, _) in models.items()}
    candidates.update({
        "wire_f32_sum": lambda: comm.allreduce(wire32, "sum"),
        "wire_sum_fp16": lambda: comm.allreduce(wire16, "sum_fp16"),
        "wire_sum_bf16": lambda: comm.allreduce(wirebf16, "sum_bf16"),
        "wire_u16_builtin_sum": lambda: world.Allreduce(MPI.IN_PLACE, bits16, op=MPI.SUM),
        "encode_fp16": lambda: float_to_fp16(grads32 / size),  # what the hooks do, no communication
        "decode_fp16": lambda: fp16_to_float32(wire16, out=wire32),
        "encode_bf16": lambda: float_to_bf16_bits(grads32 / size),
        "decode_bf16": lambda: bf16_bits_to_float32(wirebf16, out=wire32),
    })
    stats = common.interleaved(candidates, rounds=a.rounds, inner=a.inner, warmup=1, before=reset_and_barrier,
                               combine=slowest)
    if rank == 0:
        buckets = [round(b.buffer.nbytes / 1e6, 3) for b in models["none"][0].reducer.buckets]
        for kind in ("fp16", "bf16"):
            common.emit(common.result(
                "compression", f"gradient sync, {size} ranks, 7.5 MB float32: {kind} hook / no hook",
                stats, f"sync_{kind}", "sync_none", ranks=size, bytes_f32=n * 4, buckets_mb=buckets))
        common.emit(common.result(
            "compression", f"bare collective, {size} ranks: sum_fp16 of {n * 2 / 1e6:.2f} MB / float32 sum of "
            f"{n * 4 / 1e6:.2f} MB", stats, "wire_sum_fp16", "wire_f32_sum", ranks=size))
        common.emit(common.result(
            "compression", f"bare collective, {size} ranks: sum_bf16 / float32 sum", stats, "wire_sum_bf16",
            "wire_f32_sum", ranks=size))
        common.emit(common.result(
            "compression", f"bare collective, {size} ranks: MPI's C sum of the same 16-bit bytes / float32 "
            "sum (the halved bytes with a free combine)", stats, "wire_u16_builtin_sum", "wire_f32_sum", ranks=size))
        common.emit(common.result(
            "compression", "local conversions, no communication (medians only)",
            {k: v for k, v in stats.items() if k.startswith(("encode", "decode"))}, ranks=size,
            note="encode: divide by the world size and round to 16 bits; decode: widen into float32"))

    # ------------------------------------------------------------ part 2: the real step
    waits = {kind: [] for kind in HOOKS}
    data = {kind: wl.Cycle(wl.ddpgrad_tensors(batches)) for kind in HOOKS}

    def step(kind):
        model, opt = models[kind]
        xb, yb = data[kind]()
        before = model.reducer.comm_wait_s
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        waits[kind].append(model.reducer.comm_wait_s - before)

    stats = common.interleaved({kind: (lambda k=kind: step(k)) for kind in HOOKS}, rounds=a.rounds,
                               inner=a.inner, warmup=1, before=barrier, combine=slowest)
    exposed = {kind: round(slowest(float(np.median(w[a.inner:]))) * 1e3, 3) for kind, w in waits.items()}
    if rank == 0:
        for kind in ("fp16", "bf16"):
            common.emit(common.result(
                "compression", f"DDP step, {size} ranks x {a.batch}: {kind} hook / no hook", stats, kind, "none",
                ranks=size, exposed_wait_ms=exposed,
                exposed_wait_ratio=round(exposed[kind] / exposed["none"], 4) if exposed["none"] else None,
                note="exposed_wait_ms: median Reducer.comm_wait_s per step, slowest rank"))


# ------------------------------------------------------------------------------ part 3
def accuracy(a):
    """Run the example on ``a.np`` ranks once per hook; report the final validation accuracy."""
    script = os.path.join(common.ROOT, "examples", "train_mlp.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "MPI_", "HYDRA_", "OMPI_"))}
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    found = {}
    for kind in HOOKS:
        cmd = common.mpi_command(script, a.np, ["--compress", kind, "--epochs", str(a.epochs), "--quiet"])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        match = re.search(r"val_acc=([0-9.]+)", proc.stdout)
        if proc.returncode != 0 or match is None:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        wall = re.search(r"wall_s=([0-9.]+)", proc.stdout)
        found[kind] = {"val_acc": float(match.group(1)), "wall_s": float(wall.group(1)) if wall else None}
    common.emit({"kind": "result", "figure": "compression",
                 "name": f"examples/train_mlp.py on {a.np} ranks, {a.epochs} epochs (digits): final val acc",
                 "val_acc": {k: v["val_acc"] for k, v in found.items()},
                 "wall_s": {k: v["wall_s"] for k, v in found.items()},
                 "blas": common.blas_summary()})


if __name__ == "__main__":
    sys.exit(main())
