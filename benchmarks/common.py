"""What every benchmark shares: the machine/BLAS record, interleaved timing, JSON output.

Rules the helpers enforce (issue 5): every figure is a ratio of medians of interleaved runs
(A B A B ..., at least 5 each, after a warm-up) taken in one process on one machine, and every
script records the machine, the NumPy/BLAS build and the BLAS environment in force.

NumPy is imported lazily here so that ``set_blas_threads`` can still act before it loads.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run as `python benchmarks/x.py` from a checkout, without installing
    sys.path.insert(0, ROOT)

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS")
"""The environment variables that change what NumPy's (and PyTorch's) BLAS does."""

THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

MIN_ROUNDS = 5
"""Issue 5: at least five timed runs of every candidate."""


# ------------------------------------------------------------------------------------ setup
def set_blas_threads(n: int):
    """Give NumPy's BLAS (and PyTorch's OpenMP) ``n`` threads. Must run before NumPy is imported:
    OpenBLAS sizes its thread pool when it loads."""
    if "numpy" in sys.modules:
        raise RuntimeError("set_blas_threads must be called before numpy is imported")
    for var in THREAD_ENV:
        os.environ[var] = str(n)


def blas_threads_from_env(default: int = 1) -> int:
    value = os.environ.get("OPENBLAS_NUM_THREADS", "")
    return int(value) if value.isdigit() else default


# ------------------------------------------------------------------------------------ record
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blas_summary() -> dict:
    """Compact: the BLAS environment and which kernel NumPy's BLAS runs, for every result line."""
    info = {var: os.environ.get(var) for var in BLAS_ENV}
    try:
        import threadpoolctl

        pools = threadpoolctl.threadpool_info()
        numpy_blas = [p for p in pools if p.get("user_api") == "blas" and "numpy" in p.get("filepath", "")]
        if numpy_blas:
            info["numpy_blas_kernel"] = numpy_blas[0].get("architecture")
            info["numpy_blas_threads"] = numpy_blas[0].get("num_threads")
    except ImportError:
        info["numpy_blas_kernel"] = "unknown (threadpoolctl not installed)"
    return info


def machine_record() -> dict:
    """Everything about the machine and the numerical libraries that can change a figure."""
    import numpy as np

    record = {
        "kind": "machine",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "env": {var: os.environ.get(var) for var in BLAS_ENV},
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],  # other work on a shared machine
    }
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]
        record["numpy_build"] = {k: {f: deps[k].get(f) for f in ("name", "version", "openblas configuration")}
                                 for k in ("blas", "lapack") if k in deps}
    except Exception as exc:  # noqa: BLE001 - older NumPy: keep going, say why
        record["numpy_build"] = f"unavailable: {exc!r}"
    try:
        import threadpoolctl

        record["threadpools"] = [
            {k: p.get(k) for k in ("user_api", "internal_api", "prefix", "version", "architecture",
                                   "num_threads", "threading_layer")}
            for p in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        record["threadpools"] = "threadpoolctl not installed"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        record["torch"] = {"version": torch.__version__, "num_threads": torch.get_num_threads(),
                           "interop_threads": torch.get_num_interop_threads()}
    if "mpi4py" in sys.modules:
        from mpi4py import MPI

        record["mpi"] = {"mpi4py": sys.modules["mpi4py"].__version__,
                         "library": MPI.Get_library_version().strip().splitlines()[0],
                         "size": MPI.COMM_WORLD.Get_size()}
    return record


# ------------------------------------------------------------------------------------ output
def emit(record: dict):
    """One JSON object per line on stdout: what ``run_all.py`` collects."""
    print(json.dumps(record, sort_keys=False, default=_jsonable), flush=True)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def result(figure: str, name: str, stats: dict, num: str | None = None, den: str | None = None,
           target: float | None = None, **extra) -> dict:
    """A result line: medians of every candidate and, when ``num``/``den`` are given, their ratio
    judged against ``target`` (a ratio at or below the target meets it)."""
    rec = {"kind": "result", "figure": figure, "name": name}
    if num is not None:
        r = stats[num]["median_s"] / stats[den]["median_s"]
        rec.update(ratio=round(r, 4), ratio_of=f"{num}/{den}")
        if target is not None:
            rec.update(target=target, met=bool(r <= target))
    rec["median_ms"] = {k: round(v["median_s"] * 1e3, 4) for k, v in stats.items()}
    rec["spread_ms"] = {k: [round(v["q1_s"] * 1e3, 4), round(v["q3_s"] * 1e3, 4)] for k, v in stats.items()}
    rec["runs"] = {k: v["n"] for k, v in stats.items()}
    # CPU time of this process (rank 0 under MPI): a cross-check that other work on a shared
    # machine did not decide the figure; it leaves out time spent descheduled or sleeping.
    rec["cpu_median_ms"] = {k: round(v["cpu_median_s"] * 1e3, 4) for k, v in stats.items() if "cpu_median_s" in v}
    if num is not None and "cpu_median_s" in stats[num]:
        rec["cpu_ratio"] = round(stats[num]["cpu_median_s"] / stats[den]["cpu_median_s"], 4)
    rec.update(extra)
    rec["blas"] = blas_summary()
    return rec


# ------------------------------------------------------------------------------------ timing
def summarize(samples: list[float]) -> dict:
    s = sorted(samples)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0]] * 3
    return {"median_s": statistics.median(s), "q1_s": q[0], "q3_s": q[2], "min_s": s[0], "n": len(s)}


def interleaved(candidates: dict, rounds: int = 7, inner: int = 5, warmup: int = 1,
                before=None, combine=None) -> dict:
    """Time ``candidates`` (name -> zero-argument step function) in interleaved runs.

    A run is ``inner`` consecutive calls of one candidate; runs go A B C A B C ... for ``rounds``
    rounds after ``warmup`` untimed rounds. Returns name -> summary of wall seconds per call
    (plus ``cpu_median_s``, this process's CPU seconds per call).
    ``before()`` runs before each run, untimed (e.g. an MPI barrier so that ranks start
    together); ``combine(seconds)`` turns this process's run time into the job's (e.g. the max
    over ranks).
    """
    if rounds < MIN_ROUNDS:
        raise ValueError(f"at least {MIN_ROUNDS} interleaved rounds are required, got {rounds}")
    samples = {name: [] for name in candidates}
    cpu = {name: [] for name in candidates}
    for r in range(warmup + rounds):
        for name, fn in candidates.items():
            if before is not None:
                before()
            c0 = time.process_time()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            elapsed = time.perf_counter() - t0
            used = time.process_time() - c0
            if combine is not None:
                elapsed = combine(elapsed)
            if r >= warmup:
                samples[name].append(elapsed / inner)
                cpu[name].append(used / inner)
    out = {}
    for name in candidates:
        out[name] = summarize(samples[name])
        out[name]["cpu_median_s"] = statistics.median(cpu[name])
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------ MPI
def under_mpi() -> bool:
    """Whether an MPI launcher (MPICH's Hydra, Open MPI) started this process."""
    return "PMI_SIZE" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ


def mpi_rank_size() -> tuple[int, int]:
    for rank_var, size_var in (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")):
        if size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    return 0, 1


def find_mpiexec() -> str:
    """The mpiexec ddprun would use (beside this Python, else the first on PATH)."""
    from ddpgrad.launch.mpiexec import find_mpiexec as ddprun_mpiexec  # noqa: PLC0415

    return ddprun_mpiexec()


def mpi_command(script: str, nranks: int, args=()) -> list[str]:
    return [find_mpiexec(), "-n", str(nranks), sys.executable, script, *args]


def relaunch_under_mpi(script: str, nranks: int, argv) -> int:
    """Run ``script`` on ``nranks`` MPI ranks with the same arguments (for a direct `python x.py`)."""
    import subprocess

    return subprocess.call(mpi_command(script, nranks, argv))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
