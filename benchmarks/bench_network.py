"""Figure 7 (issue 9): the data-parallel step across two simulated nodes, over TCP, with the
link limited to 10, 2 and 1 Gb/s (and unlimited), against the limit of perfect overlap.

Two nodes of ``launch/simcluster.py`` (network namespaces joined by a veth, UCX over TCP, ``tbf``
rate limits), one rank per node, the MLP 784-1024-1024-10, batch 128 per rank, float32, one
BLAS thread. At each rate one MPI job times these candidates interleaved (medians, slowest rank,
a barrier before each run; see ``common.py``):

- ``compute``: the hand-written NumPy step alone (no communication);
- ``allreduce``: one raw ``MPI.Allreduce`` of all the gradients (one flat float32 buffer);
- ``floor``: the NumPy step with that Allreduce between backward and the update;
- ``ddpgrad``, ``ddpgrad_fp16``, ``ddpgrad_bf16``: ddpgrad's DistributedDataParallel, without a
  hook and with the 16-bit compression hooks;
- ``torch``, ``torch_fp16``: PyTorch DDP on gloo (over eth1 of the simulated network), without a
  hook and with PyTorch's fp16 compression hook;

and ``limit`` = max(compute, allreduce), what perfect overlap of communication with compute
would give. Every line it prints is JSON (machine record, one result per ratio), then a table.

    python benchmarks/bench_network.py                                   # all rates (root)
    python benchmarks/bench_network.py --rates unlimited,1gbit --steps 2 --rounds 5   # quick look

It needs root (network namespaces); without, it prints why and exits 0 (a skip, not a failure).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import common

RATES = ("unlimited", "10gbit", "2gbit", "1gbit")
SLOW_RATES = ("2gbit", "1gbit")
"""Where bandwidth is short: the compression targets apply here (issue 9, section 4)."""
TARGET_VS_TORCH = 0.80
TARGET_VS_LIMIT = 1.15
TARGET_FP16_VS_UNCOMPRESSED = 0.65
TARGET_FP16_VS_TORCH_FP16 = 0.80
CANDIDATES = ("compute", "allreduce", "floor", "ddpgrad", "ddpgrad_fp16", "ddpgrad_bf16", "torch", "torch_fp16")
LABELS = {
    "compute": "NumPy step alone (compute)",
    "allreduce": "one raw Allreduce of all gradients",
    "floor": "NumPy step + raw Allreduce (floor)",
    "limit": "limit max(compute, allreduce)",
    "ddpgrad": "ddpgrad DDP",
    "ddpgrad_fp16": "ddpgrad DDP + fp16 hook",
    "ddpgrad_bf16": "ddpgrad DDP + bf16 hook",
    "torch": "PyTorch DDP (gloo)",
    "torch_fp16": "PyTorch DDP + fp16 hook",
}
RESULTS = os.path.join(common.HERE, "results", "network.jsonl")
README = os.path.join(common.HERE, "README.md")
START, END = "<!-- network:start -->", "<!-- network:end -->"
JOB_TIMEOUT_S = 600
SAME_MODEL_ATOL = 1e-5


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default=",".join(RATES), help=f"comma-separated link rates (default {','.join(RATES)})")
    p.add_argument("--batch", type=int, default=128, help="per-rank batch")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (at least 5)")
    p.add_argument("--steps", type=int, default=3, help="steps per timed run")
    p.add_argument("--bucket-cap-mb", type=float, default=None, help="ddpgrad's bucket cap (default: DDP's own)")
    p.add_argument("--timeout", type=float, default=JOB_TIMEOUT_S, help="seconds per rate's MPI job")
    p.add_argument("--out", default=RESULTS, help="JSON lines file (default results/network.jsonl)")
    p.add_argument("--readme", choices=("auto", "yes", "no"), default="auto",
                   help="write the table into README.md (auto: only for a full run with the defaults)")
    p.add_argument("--rate-label", default=None, help=argparse.SUPPRESS)  # set for the MPI job
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ the workloads
def ddpgrad_candidate(weights, hook=None, bucket_cap_mb=None):
    """ddpgrad's DDP step as a user writes it, through the public API only (DDP, its comm hook,
    the optimizer): a change inside the reducer is measured without editing this script."""
    import ddpgrad
    import ddpgrad.nn.functional as F
    import workloads as wl
    from ddpgrad.distributed.algorithms.ddp_comm_hooks import default_hooks
    from ddpgrad.nn.parallel import DistributedDataParallel as DDP

    options = {} if bucket_cap_mb is None else {"bucket_cap_mb": bucket_cap_mb}
    model = DDP(wl.ddpgrad_mlp(weights), **options)
    if hook is not None:
        model.register_comm_hook(None, getattr(default_hooks, f"{hook}_compress_hook"))
    optimizer = ddpgrad.optim.SGD(model.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
    return model, wl.ddpgrad_step(model, optimizer, F.cross_entropy)


def torch_candidate(weights, hook=None):
    """PyTorch DDP on the initialised gloo group, optionally with its fp16 compression hook."""
    import torch
    import workloads as wl
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    model = torch.nn.parallel.DistributedDataParallel(wl.torch_mlp(weights))
    if hook is not None:
        model.register_comm_hook(None, getattr(default_hooks, f"{hook}_compress_hook"))
    optimizer = torch.optim.SGD(model.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
    return model, wl.ddpgrad_step(model, optimizer, torch.nn.functional.cross_entropy)


def init_gloo(world, rank, size):
    """gloo on the simulated network: MASTER_ADDR is node 0's address, GLOO_SOCKET_IFNAME its
    interface (both set by the launching side); the port is one free on node 0."""
    import torch.distributed as tdist

    for var in ("MASTER_ADDR", "GLOO_SOCKET_IFNAME"):
        if not os.environ.get(var):
            raise SystemExit(f"{var} is not set: run bench_network.py without mpiexec, it launches itself")
    os.environ["MASTER_PORT"] = str(world.bcast(common.free_port() if rank == 0 else None, root=0))
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(size)
    tdist.init_process_group("gloo", init_method="env://")
    return tdist


# ------------------------------------------------------------------------------ one rate (MPI job)
def timings(a):
    common.set_blas_threads(1)
    import numpy as np
    import torch
    from mpi4py import MPI

    import ddpgrad.distributed as dist
    import workloads as wl

    torch.set_num_threads(1)
    world = MPI.COMM_WORLD.Dup()
    rank, size = world.Get_rank(), world.Get_size()
    tdist = init_gloo(world, rank, size)
    dist.init_process_group()
    if rank == 0:
        common.emit(dict(common.machine_record(), rate=a.rate_label))

    weights = wl.make_weights(wl.MLP_SIZES)
    global_batches = wl.make_classification_batches(a.batch * size)
    lo, hi = rank * a.batch, (rank + 1) * a.batch
    batches = [(x[lo:hi].copy(), y[lo:hi].copy()) for x, y in global_batches]
    ours, theirs = wl.ddpgrad_tensors(batches), wl.torch_tensors(batches)

    def raw_allreduce(buf):
        world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    compute = wl.NumpyMLP(weights, a.batch, world_size=size)
    floor = wl.NumpyMLP(weights, a.batch, world_size=size, allreduce=raw_allreduce)
    wire = np.zeros(wl.n_params(), np.float32)  # zeros: repeated sums stay finite
    models = {"ddpgrad": ddpgrad_candidate(weights, None, a.bucket_cap_mb),
              "ddpgrad_fp16": ddpgrad_candidate(weights, "fp16", a.bucket_cap_mb),
              "ddpgrad_bf16": ddpgrad_candidate(weights, "bf16", a.bucket_cap_mb),
              "torch": torch_candidate(weights), "torch_fp16": torch_candidate(weights, "fp16")}
    data = {name: (theirs if name.startswith("torch") else ours) for name in models}
    data.update(compute=batches, floor=batches)
    steps = {name: step for name, (_, step) in models.items()}
    steps.update(compute=lambda x, y: compute.step(x, y), floor=lambda x, y: floor.step(x, y))

    # Same training? Three steps each from the same weights; one process on the global batch is the oracle.
    reference = wl.NumpyMLP(weights, a.batch * size)
    for k in range(3):
        reference.step(*global_batches[k])
        for name, step in steps.items():
            step(*data[name][k])
    first_layer = {"floor": floor.W[0]}
    first_layer.update({name: (m.module[0].weight.detach().numpy() if name.startswith("torch")
                               else m.module[0].weight._data) for name, (m, _) in models.items()})
    deviation = {name: float(np.abs(w - reference.W[0]).max()) for name, w in first_layer.items()}
    deviation = world.allreduce(deviation, op=lambda x, y, _=None: {k: max(x[k], y[k]) for k in x})

    cycles = {name: wl.Cycle(data[name]) for name in steps}
    candidates = {name: (lambda s=steps[name], c=cycles[name]: s(*c())) for name in CANDIDATES if name in steps}
    candidates["allreduce"] = lambda: raw_allreduce(wire)
    candidates = {name: candidates[name] for name in CANDIDATES}
    stats = common.interleaved(candidates, rounds=a.rounds, inner=a.steps, warmup=1, before=world.Barrier,
                               combine=lambda t: world.allreduce(t, op=MPI.MAX))
    if rank == 0:
        for rec in results(stats, a, size, deviation):
            common.emit(rec)
    tdist.destroy_process_group()
    return 0


def with_limit(stats):
    """``stats`` plus ``limit``: max(compute, allreduce), the median of whichever is slower."""
    slow = max(("compute", "allreduce"), key=lambda k: stats[k]["median_s"])
    return dict(stats, limit=dict(stats[slow], limit_of=slow))


def results(stats, a, size, deviation):
    """One result line per ratio the issue's targets use, and one with every median."""
    stats = with_limit(stats)
    rate, slow = a.rate_label, a.rate_label in SLOW_RATES
    where = f"network {rate}, {size} nodes x 1 rank x {a.batch}"
    common_extra = dict(rate=rate, nodes=size, ranks_per_node=1, batch_per_rank=a.batch)
    ratios = [
        ("ddpgrad", "torch", TARGET_VS_TORCH, "ddpgrad DDP/PyTorch DDP gloo"),
        ("ddpgrad", "limit", TARGET_VS_LIMIT, "ddpgrad DDP/max(compute, allreduce)"),
        ("ddpgrad_fp16", "ddpgrad", TARGET_FP16_VS_UNCOMPRESSED if slow else None, "ddpgrad fp16/uncompressed ddpgrad"),
        ("ddpgrad_fp16", "torch_fp16", TARGET_FP16_VS_TORCH_FP16 if slow else None, "ddpgrad fp16/PyTorch fp16"),
        ("ddpgrad_bf16", "ddpgrad", None, "ddpgrad bf16/uncompressed ddpgrad"),
        ("ddpgrad", "floor", None, "ddpgrad DDP/(NumPy + raw Allreduce)"),
        ("torch", "limit", None, "PyTorch DDP/max(compute, allreduce)"),
    ]
    out = [common.result("network", f"{where}: {label}", {num: stats[num], den: stats[den]}, num, den, target,
                         **common_extra) for num, den, target, label in ratios]
    same = {k: v <= SAME_MODEL_ATOL for k, v in deviation.items() if "16" not in k}
    out.append(common.result("network_steps", f"{where}: per-step medians", stats, limit_of=stats["limit"]["limit_of"],
                             first_layer_max_deviation_vs_global_batch=deviation, matches_global_batch=same,
                             ddpgrad_bucket_cap_mb=a.bucket_cap_mb, **common_extra))
    return out


# ------------------------------------------------------------------------------ all rates
def load_simcluster():
    spec = importlib.util.spec_from_file_location("simcluster", os.path.join(common.ROOT, "launch", "simcluster.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_rates(a, argv):
    sc = load_simcluster()
    rates = [r.strip() for r in a.rates.split(",") if r.strip()]
    for rate in rates:
        sc.rate_bits_per_s(rate)  # a bad rate fails before any cluster is made
    reason = sc.unavailable_reason()
    if reason:
        common.emit({"kind": "skipped", "figure": "network", "reason": f"simulated cluster unavailable: {reason}"})
        print(f"[bench_network] skipped: simulated cluster unavailable: {reason}", file=sys.stderr)
        return 0
    records, failed = [], []
    job_args = [arg for arg in argv if not arg.startswith("--rate-label")]
    with sc.SimCluster(nodes=2) as cluster:
        for rate in rates:
            cluster.set_rate(rate)
            env = cluster.env(MASTER_ADDR=cluster.addresses[0], GLOO_SOCKET_IFNAME=sc.IFACE, OPENBLAS_NUM_THREADS=1,
                              OMP_NUM_THREADS=1, MKL_NUM_THREADS=1)
            t0 = time.perf_counter()
            try:
                proc = cluster.run([sys.executable, os.path.abspath(__file__), *job_args, "--rate-label", rate],
                                   ranks_per_node=1, timeout=a.timeout, env=env, check=True)
            except sc.ClusterJobFailed as exc:
                print(f"[bench_network] rate {rate} failed:\n{exc}", file=sys.stderr, flush=True)
                failed.append(rate)
                continue
            print(f"[bench_network] rate {rate}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            for line in proc.stdout.splitlines():
                if line.startswith("{"):
                    records.append(json.loads(line))
                    print(line, flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    text = table(records)
    print(text)
    full_run = rates == list(RATES) and a.rounds >= 7 and a.steps >= 3 and a.bucket_cap_mb is None
    if a.readme == "yes" or (a.readme == "auto" and full_run and not failed):
        write_readme(text)
    if failed:
        print(f"[bench_network] failed at: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def table(records):
    """Markdown: the per-step medians by rate, then every ratio with its target."""
    steps = {r["rate"]: r for r in records if r.get("figure") == "network_steps"}
    machines = [r for r in records if r.get("kind") == "machine"]
    if not steps:
        return "(no network results)"
    rates = list(steps)
    m = machines[0]
    blas = next((p for p in m.get("threadpools", []) if isinstance(p, dict) and p.get("user_api") == "blas"), {})
    mpi = " ".join(str(m.get("mpi", {}).get("library")).split())
    loads = ", ".join(f"{r.get('rate')}: {r.get('loadavg_1_5_15', ['?'])[0]}" for r in machines)
    lines = [
        f"Machine: {m.get('cpu_model')}, {m.get('cores')} cores; NumPy {m.get('numpy')} with "
        f"{blas.get('internal_api')} {blas.get('version')} (kernel {blas.get('architecture')}, "
        f"{blas.get('num_threads')} thread); PyTorch {m.get('torch', {}).get('version')}; "
        f"{mpi}; 2 simulated nodes (veth, UCX over TCP, tbf), 1 rank each, "
        f"batch {steps[rates[0]].get('batch_per_rank')} per rank; 1-min load average at each rate's start: {loads}; "
        f"recorded {m.get('time')}.",
        "",
        "| per step (ms) | " + " | ".join(rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    for name in ("compute", "allreduce", "floor", "limit") + CANDIDATES[3:]:
        lines.append(f"| {LABELS[name]} | " + " | ".join(f"{steps[r]['median_ms'][name]:.1f}" for r in rates) + " |")
    lines += ["", "| ratio | target | " + " | ".join(rates) + " |", "|---|---|" + "---|" * len(rates)]
    ratios = {}
    for r in records:
        if r.get("figure") == "network" and "ratio" in r:
            label = r["name"].split(": ", 1)[1]
            ratios.setdefault(label, {})[r["rate"]] = r
    for label, by_rate in ratios.items():
        targets = {x["target"] for x in by_rate.values() if "target" in x}
        where = "" if all("target" in by_rate.get(rt, {}) for rt in rates) else " at " + ", ".join(
            rt for rt in rates if "target" in by_rate.get(rt, {}))
        target = f"≤ {min(targets):g}{where}" if targets else "—"
        cells = []
        for rt in rates:
            x = by_rate.get(rt)
            cells.append("—" if x is None else f"{x['ratio']:.2f}" + (" **no**" if x.get("met") is False else ""))
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    same = {rt: s.get("matches_global_batch") for rt, s in steps.items()}
    lines += ["", f"Same training as one process on the global batch after 3 steps (first layer, atol "
              f"{SAME_MODEL_ATOL:g}): {same}."]
    return "\n".join(lines)


def write_readme(text):
    with open(README) as f:
        doc = f.read()
    if START not in doc or END not in doc:
        print(f"[bench_network] {README} has no {START} ... {END} markers: table not written", file=sys.stderr)
        return
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(README, "w") as f:
        f.write(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if a.rounds < common.MIN_ROUNDS:
        raise SystemExit(f"--rounds must be at least {common.MIN_ROUNDS}, got {a.rounds}")
    if a.steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {a.steps}")
    if common.under_mpi():
        if a.rate_label is None:
            raise SystemExit("bench_network.py starts its own simulated cluster: run it without mpiexec")
        return timings(a)
    return run_rates(a, argv)


if __name__ == "__main__":
    sys.exit(main())
