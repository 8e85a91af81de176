#!/usr/bin/env python3
"""Start a ddpgrad script on N local MPI ranks, with one BLAS thread budget per rank.

    python launch/ddprun.py -n 4 examples/train_mlp.py --epochs 5

Finds ``mpiexec`` next to this Python (the one the ``mpich`` wheel installs with
``pip install "ddpgrad[mpi]"``) or on PATH, and gives each rank ``cores // N`` BLAS threads (at
least 1) unless you set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS yourself: ranks that each start one
BLAS thread per core fight over the cores (see launch/README.md for the measured effect).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def find_mpiexec():
    """The mpiexec beside this interpreter (the mpich wheel's), else the first on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise SystemExit('ddprun: no mpiexec found. Install one with: pip install "ddpgrad[mpi]" '
                         "(brings the mpich wheel), or load your cluster's MPI module")
    return found


def blas_threads(ranks, cores=None):
    """BLAS threads per rank so that ranks x threads does not exceed the cores."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // ranks)


def main(argv=None):
    p = argparse.ArgumentParser(description="Run a script on N local MPI ranks.")
    p.add_argument("-n", "--nproc", type=int, default=None, help="number of ranks (default: number of cores)")
    p.add_argument("--mpiexec", default=None, help="path of the mpiexec to use")
    p.add_argument("--dry-run", action="store_true", help="print the command and environment, do not run")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    n = a.nproc or os.cpu_count() or 1
    if n < 1:
        raise SystemExit(f"ddprun: -n must be at least 1, got {n}")
    env = dict(os.environ)
    threads = blas_threads(n)
    for var in THREAD_VARS:
        env.setdefault(var, str(threads))
    cmd = [a.mpiexec or find_mpiexec(), "-n", str(n), sys.executable, a.script, *a.args]
    print(f"ddprun: {' '.join(cmd)}  (BLAS threads per rank: {env['OPENBLAS_NUM_THREADS']})", file=sys.stderr, flush=True)
    if a.dry_run:
        return 0
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
