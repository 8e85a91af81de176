"""Figure 6: scaling. Samples/s of the data-parallel MLP step (figure 3's, per-rank batch 128,
one BLAS thread per rank) on 1, 2 and 4 ranks, ddpgrad DDP and the NumPy + raw Allreduce floor
interleaved inside each job, jobs interleaved 1 2 4 1 2 4 ... On a 2-core machine 4 ranks
oversubscribe the cores: reported as measured, not tuned for.

    python benchmarks/bench_scaling.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import common

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--jobs", type=int, default=2, help="jobs per rank count, interleaved")
    p.add_argument("--batch", type=int, default=128, help="per-rank batch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--inner", type=int, default=3)
    a = p.parse_args(argv)
    common.set_blas_threads(1)
    common.emit(common.machine_record())

    per_n = {n: [] for n in a.ranks}
    for _ in range(a.jobs):
        for n in a.ranks:
            cmd = common.mpi_command(os.path.join(HERE, "bench_ddp.py"), n,
                                     ["--no-torch", "--figure", "scaling_job", "--batch", str(a.batch),
                                      "--rounds", str(a.rounds), "--inner", str(a.inner)])
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            results = [r for r in lines if r.get("kind") == "result"]
            if out.returncode != 0 or not results:
                raise RuntimeError(f"scaling job on {n} ranks failed:\n{out.stdout}\n{out.stderr}")
            per_n[n].append(results[0])

    def med(n, impl):
        return statistics.median(r["samples_per_s"][impl] for r in per_n[n])

    base = {impl: med(a.ranks[0], impl) for impl in ("ddpgrad", "floor")}
    for n in a.ranks:
        sps = {impl: round(med(n, impl), 1) for impl in ("ddpgrad", "floor")}
        ratio = statistics.median(r["ratio"] for r in per_n[n])
        common.emit({
            "kind": "result", "figure": "scaling", "name": f"scaling: {n} rank(s) x {a.batch}",
            "ranks": n, "samples_per_s": sps,
            "speedup_vs_1_rank": {impl: round(sps[impl] / base[impl] * a.ranks[0], 3) if n != a.ranks[0] else 1.0
                                  for impl in sps} if a.ranks[0] == 1 else None,
            "ratio": round(ratio, 4), "ratio_of": "ddpgrad step time/floor step time (median over jobs)",
            "oversubscribed": n > (os.cpu_count() or 1),
            "jobs": len(per_n[n]), "job_samples_per_s": [r["samples_per_s"] for r in per_n[n]],
            "blas": common.blas_summary()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
