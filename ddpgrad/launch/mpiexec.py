"""Which mpiexec to run, how to tell it the hosts, and how many BLAS threads each rank gets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
HYDRA, OPEN_MPI, UNKNOWN = "hydra", "openmpi", "unknown"
VERSION_TIMEOUT_S = 20
"""``mpiexec --version`` answers in well under a second; this only bounds a broken install."""


def find_mpiexec() -> str:
    """The mpiexec beside this interpreter (the mpich wheel's), else the first on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise SystemExit('ddprun: no mpiexec found. Install one with: pip install "ddpgrad[mpi]" '
                         "(brings the mpich wheel), or load your cluster's MPI module, or pass --mpiexec PATH")
    return found


def flavor(mpiexec: str) -> str:
    """"hydra" (MPICH, Intel MPI, MVAPICH), "openmpi", or "unknown", from ``mpiexec --version``."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    text = out.stdout + out.stderr
    if "HYDRA" in text or "Intel(R) MPI" in text:
        return HYDRA
    if "Open MPI" in text or "OpenRTE" in text or "PRRTE" in text:
        return OPEN_MPI
    return UNKNOWN


def parse_hosts(text: str, where: str) -> list[tuple[str, int]]:
    """[(host, slots)] from hostfile lines or a -H list: "node-a:4", "node-a slots=4" or "node-a"
    (one slot); ``#`` starts a comment. ``where`` names the source in error messages."""
    hosts = []
    entries = [e for line in text.splitlines() for e in line.split("#", 1)[0].split(",")]
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        name, _, slots = entry.partition(":") if ":" in entry else entry.partition(" slots=")
        name, slots = name.strip(), slots.strip() or "1"
        if not name or " " in name or not slots.isdigit() or int(slots) < 1:
            raise SystemExit(f'ddprun: bad host entry {raw.strip()!r} in {where}: write "host:slots" '
                             '(MPICH style) or "host slots=N" (Open MPI style), slots at least 1')
        hosts.append((name, int(slots)))
    if not hosts:
        raise SystemExit(f"ddprun: no hosts in {where}")
    return hosts


def hosts_arguments(kind: str, hosts: list[tuple[str, int]]) -> list[str]:
    """The mpiexec options that place ranks on ``hosts``."""
    listed = ",".join(f"{name}:{slots}" for name, slots in hosts)
    if kind == HYDRA:
        return ["-hosts", listed]
    if kind == OPEN_MPI:
        return ["--host", listed]
    raise SystemExit("ddprun: can not tell which MPI this mpiexec belongs to (neither MPICH's Hydra nor "
                     "Open MPI), so it does not know how to pass hosts: give them with --mpi-args")


def forwarding_arguments(kind: str, names) -> list[str]:
    """Options that carry the variables ddprun set to remote ranks (Hydra forwards all by default)."""
    return [arg for name in sorted(names) for arg in ("-x", name)] if kind == OPEN_MPI else []


def available_cores() -> int:
    """Cores this process may run on (the scheduler's CPU set, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def blas_threads(ranks: int, cores: int | None = None) -> int:
    """BLAS threads per rank so that ranks x threads does not exceed the cores."""
    if cores is None:
        cores = available_cores()
    return max(1, cores // ranks)


def thread_environment(ranks_per_node: int, environ) -> dict[str, str]:
    """The BLAS thread variables to add: ``cores // ranks_per_node`` for each one not set yet."""
    threads = str(blas_threads(ranks_per_node))
    return {var: threads for var in THREAD_VARS if var not in environ}
