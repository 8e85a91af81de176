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
import shlex
import shutil
import signal
import subprocess
import sys

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SHUTDOWN_GRACE_S = 10
"""After Ctrl-C, how long mpiexec gets to stop the ranks before it is killed."""


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


def available_cores():
    """Cores this process may run on (the scheduler's CPU set, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def blas_threads(ranks, cores=None):
    """BLAS threads per rank so that ranks x threads does not exceed the cores."""
    if cores is None:
        cores = available_cores()
    return max(1, cores // ranks)


def rank_environment(ranks, environ=None):
    """(environment for the ranks, the variables this launcher set in it)."""
    env = dict(os.environ if environ is None else environ)
    threads = str(blas_threads(ranks))
    added = {var: threads for var in THREAD_VARS if var not in env}
    env.update(added)
    return env, added


def main(argv=None):
    p = argparse.ArgumentParser(description="Run a script on N local MPI ranks.")
    p.add_argument("-n", "--nproc", type=int, default=None,
                   help="number of ranks (default: the cores this process may use)")
    p.add_argument("--mpiexec", default=None, help="path of the mpiexec to use")
    p.add_argument("--dry-run", action="store_true", help="print the command and environment, do not run")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    n = available_cores() if a.nproc is None else a.nproc
    if n < 1:
        raise SystemExit(f"ddprun: -n must be at least 1, got {n}")
    if not os.path.isfile(a.script):
        raise SystemExit(f"ddprun: no such script: {a.script}")
    env, added = rank_environment(n)
    cmd = [a.mpiexec or find_mpiexec(), "-n", str(n), sys.executable, a.script, *a.args]
    threads = env["OPENBLAS_NUM_THREADS"]
    if a.dry_run:
        print(shlex.join(cmd))
        for var in THREAD_VARS:
            print(f"{var}={env[var]}" + ("" if var in added else "  (already set)"))
        return 0
    print(f"ddprun: {shlex.join(cmd)}  (BLAS threads per rank: {threads})", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # mpiexec got the Ctrl-C too and is stopping the ranks: let it finish doing so.
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
