"""Run every benchmark (issue 5), launching mpiexec where needed, and collect the JSON lines.

    python benchmarks/run_all.py              # or: make bench
    python benchmarks/run_all.py --only step ddp
    python benchmarks/run_all.py --only network   # 2 simulated nodes (root), see bench_network.py
    python benchmarks/run_all.py --no-readme  # leave benchmarks/README.md alone

Writes ``benchmarks/results/latest.jsonl`` (every line every script printed, tagged with its
job; ``results/partial.jsonl`` for an ``--only`` run) and prints the table of figures vs targets, which it also writes into README.md between
the ``results`` markers. BLAS threads are set to 1 per process unless a job says otherwise;
OPENBLAS_CORETYPE is left as found (it is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common

HERE = common.HERE
RESULTS = os.path.join(HERE, "results", "latest.jsonl")
PARTIAL = os.path.join(HERE, "results", "partial.jsonl")
README = os.path.join(HERE, "README.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"


def script(name):
    return os.path.join(HERE, name)


def jobs(args):
    """(job name, group, command, extra environment) in the order they run."""
    py = sys.executable
    out = [
        ("step_1thread", "step", [py, script("bench_step.py"), "--threads", "1", "--rounds", "15"], {}),
        ("step_2threads", "step", [py, script("bench_step.py"), "--threads", "2", "--rounds", "15"], {}),
        ("overhead", "overhead", [py, script("bench_overhead.py")], {}),
        ("ddp", "ddp", common.mpi_command(script("bench_ddp.py"), 2, ["--rounds", "15"]), {}),
        ("sync", "sync", common.mpi_command(script("bench_sync.py"), 2, ["--rounds", "9"]), {}),
        ("sync_async_progress", "sync", common.mpi_command(script("bench_sync.py"), 2, ["--rounds", "5"]),
         {"MPIR_CVAR_ASYNC_PROGRESS": "1"}),
        ("memory", "memory", [py, script("bench_memory.py")], {}),
        ("scaling", "scaling", [py, script("bench_scaling.py")], {}),
        ("profile_single", "profile", [py, script("profile_step.py"), "--what", "single"], {}),
        ("profile_tiny", "profile", [py, script("profile_step.py"), "--what", "tiny", "--inner", "200"], {}),
        ("profile_ddp", "profile", common.mpi_command(script("profile_step.py"), 2, ["--what", "ddp"]), {}),
        # two simulated nodes (root only; skipped with the reason otherwise); its own table in README.md
        ("network", "network", [py, script("bench_network.py")] + (["--readme", "no"] if args.no_readme else []), {}),
    ]
    if args.unset_coretype:
        # One extra figure with OpenBLAS picking its kernel itself, labelled as such (never the headline).
        out.append(("step_1thread_coretype_unset", "step",
                    [py, script("bench_step.py"), "--threads", "1", "--rounds", "15"],
                    {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}))
    if args.only:
        out = [j for j in out if j[1] in args.only or j[0] in args.only]
    return out


def run(name, cmd, extra_env, timeout):
    env = dict(os.environ)
    for var in common.THREAD_ENV:
        env.setdefault(var, "1")
    for var, value in extra_env.items():
        if value is None:
            env.pop(var, None)
        else:
            env[var] = value
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - t0
    records = [{"kind": "job", "job": name, "command": cmd, "returncode": proc.returncode,
                "seconds": round(elapsed, 1), "loadavg_1min_start_end": [round(load_start[0], 2),
                                                                         round(os.getloadavg()[0], 2)]}]
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            rec["job"] = name
            if extra_env:
                rec["job_env"] = extra_env
            records.append(rec)
    if proc.returncode != 0:
        sys.stderr.write(f"[run_all] {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n")
    print(f"[run_all] {name}: {len([r for r in records if r.get('kind') == 'result'])} result(s) "
          f"in {elapsed:.0f} s", file=sys.stderr, flush=True)
    return records, proc.returncode


def table(records):
    """Markdown: every result with a target, then the informative ratios."""
    env = next((r["env"] for r in records if r.get("kind") == "machine"), {})
    machine = next((r for r in records if r.get("kind") == "machine"), {})
    kernel = next((p.get("architecture") for p in machine.get("threadpools", [])
                   if isinstance(p, dict) and p.get("internal_api") == "openblas"), None)
    lines = [
        f"Machine: {machine.get('cpu_model')}, {machine.get('cores')} cores, load average "
        f"{machine.get('loadavg_1_5_15')} at start; NumPy {machine.get('numpy')} with "
        f"{(machine.get('numpy_build') or {}).get('blas', {}).get('version', '?')} OpenBLAS (kernel "
        f"{kernel}); OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE')!s}, "
        f"OPENBLAS_NUM_THREADS={env.get('OPENBLAS_NUM_THREADS')!s} per process; "
        f"recorded {machine.get('time')}.",
        "",
        "| figure | target | measured | met? | medians |",
        "|---|---|---|---|---|",
    ]
    informative = []
    for r in records:
        if r.get("kind") != "result" or "ratio" not in r:
            continue
        if r.get("figure") == "network" and "target" not in r:
            continue  # the informative network ratios are in that figure's own table
        label = r["name"] + (" (OPENBLAS_CORETYPE/L2_SIZE unset)" if r.get("job", "").endswith("coretype_unset") else "")
        shown = details(r)
        if "target" in r:
            lines.append(f"| {label} | ≤ {r['target']:g} | {r['ratio']:.3f} | {'yes' if r['met'] else '**no**'} | {shown} |")
        else:
            informative.append(f"| {label} | — | {r['ratio']:.3f} | — | {shown} |")
    return "\n".join(lines + informative)


def _pairs(d, fmt="{:g}"):
    return ", ".join(f"{k} {fmt.format(v)}" for k, v in d.items())


def details(r):
    """The numbers behind a ratio, compactly, for the table's last column."""
    fig = r.get("figure")
    if fig == "memory":
        return "peak MiB: " + _pairs(r["peak_rss_mb"])
    if fig == "scaling":
        speedup = r.get("speedup_vs_1_rank") or {}
        return "samples/s: " + _pairs(r["samples_per_s"]) + ("; vs 1 rank: " + _pairs(speedup) if speedup else "")
    if fig == "sync_overlap":
        v = r["variants"]
        exposed = {k: x["exposed_comm_ms_min_max_rank"][0] for k, x in v.items() if "exposed_comm_ms_min_max_rank" in x}
        return ("step/floor: " + _pairs(r["step_ratio_vs_floor"], "{:.2f}") + "; exposed comm ms (last rank): "
                + _pairs(exposed) + f"; floor Allreduce {v['floor']['allreduce_ms_min_max_rank'][0]:g}")
    text = "ms: " + _pairs(r.get("median_ms", {}))
    if "cpu_ratio" in r and fig in ("step", "overhead"):
        text += f"; CPU-time ratio {r['cpu_ratio']:.3f}"
    return text


def write_readme(text):
    if not os.path.exists(README):
        return
    with open(README) as f:
        doc = f.read()
    if START not in doc or END not in doc:
        return
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(README, "w") as f:
        f.write(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+",
                   help="job groups or names to run (step overhead ddp sync memory scaling profile network)")
    p.add_argument("--unset-coretype", action="store_true",
                   help="also run the 1-thread step with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (labelled)")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--timeout", type=float, default=600, help="seconds per job")
    a = p.parse_args(argv)

    records, failed = [], []
    t0 = time.perf_counter()
    for name, _group, cmd, extra_env in jobs(a):
        recs, rc = run(name, cmd, extra_env, a.timeout)
        records += recs
        if rc != 0:
            failed.append(name)
    path = RESULTS if not a.only else PARTIAL  # a partial run never replaces the full record
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    text = table(records)
    print(text)
    print(f"\n[run_all] {len(records)} lines -> {os.path.relpath(path)} in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    if not a.no_readme and not a.only:
        write_readme(text)
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
