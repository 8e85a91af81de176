"""Running ddprun and plain Python in subprocesses with a clean launcher environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 90
"""Outer deadline of one launched job: a hang fails the test instead of stalling the suite."""
LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "MPI_", "MPIR_", "HYDRA_", "OMPI_", "MV2_", "SLURM_", "TORCHELASTIC_")
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "DDPGRAD_TERMINAL_COLUMNS",
                 "DDPGRAD_RESTART_COUNT", "DDPGRAD_MAX_RESTARTS", "DDPGRAD_LOG_LEVEL", "DDPGRAD_LOG_RANKS")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def clean_env(keep_threads: bool = False, **set_vars: str) -> dict[str, str]:
    """This environment without any launcher's variables (and without BLAS thread settings)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(LAUNCHER_PREFIXES) and k not in LAUNCHER_VARS
           and (keep_threads or k not in THREAD_VARS)}
    env.update(set_vars)
    return env


def ddprun(*args: str, timeout: float = TIMEOUT_S, **set_vars: str) -> subprocess.CompletedProcess:
    """``python -m ddpgrad.launch ARGS`` from the repository root."""
    return subprocess.run([sys.executable, "-m", "ddpgrad.launch", *args], cwd=ROOT,
                          env=clean_env(**set_vars), capture_output=True, text=True, timeout=timeout)


def python(code: str, timeout: float = TIMEOUT_S, **set_vars: str) -> subprocess.CompletedProcess:
    """``python -c CODE`` in an environment that announces exactly ``set_vars``."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(**set_vars),
                          capture_output=True, text=True, timeout=timeout)


def mpi_available() -> bool:
    return bool(shutil.which("mpiexec") or os.access(Path(sys.executable).with_name("mpiexec"), os.X_OK))


def mpiexec() -> str:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("mpiexec")
