"""launch/ddprun.py: finds mpiexec, picks the rank count, budgets BLAS threads, runs the ranks."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DDPRUN = ROOT / "launch" / "ddprun.py"
TIMEOUT_S = 60
MPI_PREFIXES = ("PMI_", "PMIX_", "MPI_", "MPIR_", "HYDRA_", "OMPI_")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _load_ddprun():
    spec = importlib.util.spec_from_file_location("ddprun", DDPRUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ddprun = _load_ddprun()


def _env(**set_vars):
    """The test's environment without MPI's variables and without any BLAS thread setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(MPI_PREFIXES) and k not in THREAD_VARS}
    env.update(set_vars)
    return env


def _ddprun(*args, **set_vars):
    return subprocess.run([sys.executable, str(DDPRUN), *args], cwd=ROOT, env=_env(**set_vars),
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def _dry_run(*args, **set_vars):
    """(command as a list, {VAR: value} printed) of ``ddprun --dry-run``."""
    out = _ddprun("--dry-run", *args, **set_vars)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    env = dict(line.split("  ")[0].split("=", 1) for line in lines[1:])
    return shlex.split(lines[0]), env


@pytest.mark.parametrize("ranks,cores,threads", [(1, 16, 16), (2, 2, 1), (4, 2, 1), (3, 16, 5), (16, 16, 1), (2, 1, 1)])
def test_blas_threads_share_the_cores_and_never_drop_below_one(ranks, cores, threads):
    assert ddprun.blas_threads(ranks, cores) == threads


def test_dry_run_prints_the_command_and_the_thread_budget():
    cmd, env = _dry_run("-n", "2", "examples/train_mlp.py", "--epochs", "3", "--hidden", "8", "8")
    assert Path(cmd[0]).name in ("mpiexec", "mpirun") and os.access(cmd[0], os.X_OK)
    assert cmd[1:] == ["-n", "2", sys.executable, "examples/train_mlp.py", "--epochs", "3", "--hidden", "8", "8"]
    assert env == {var: str(max(1, CORES // 2)) for var in THREAD_VARS}


def test_mpiexec_beside_the_interpreter_is_preferred():
    beside = Path(sys.executable).with_name("mpiexec")
    if not os.access(beside, os.X_OK):
        pytest.skip("no mpiexec installed beside this Python (the mpich wheel puts one there)")
    cmd, _ = _dry_run("-n", "1", "examples/quickstart.py", PATH="/usr/bin:/bin")
    assert cmd[0] == str(beside)


def test_script_arguments_that_look_like_launcher_options_go_to_the_script():
    cmd, _ = _dry_run("-n", "2", "examples/quickstart.py", "-n", "3", "--dry-run", "--mpiexec", "x")
    assert cmd[1:3] == ["-n", "2"]
    assert cmd[-5:] == ["-n", "3", "--dry-run", "--mpiexec", "x"]


def test_default_rank_count_is_the_usable_cores():
    cmd, env = _dry_run("examples/quickstart.py")
    assert cmd[1:3] == ["-n", str(CORES)]
    assert env["OPENBLAS_NUM_THREADS"] == "1"


def test_thread_settings_already_made_are_kept():
    _, env = _dry_run("-n", "1", "examples/quickstart.py", OPENBLAS_NUM_THREADS="3", OMP_NUM_THREADS="5")
    assert env == {"OPENBLAS_NUM_THREADS": "3", "OMP_NUM_THREADS": "5", "MKL_NUM_THREADS": str(CORES)}


def test_explicit_mpiexec_is_used(tmp_path):
    cmd, _ = _dry_run("--mpiexec", "/opt/site-mpi/bin/mpirun", "-n", "2", "examples/quickstart.py")
    assert cmd[0] == "/opt/site-mpi/bin/mpirun"


@pytest.mark.parametrize("args,message", [
    (["-n", "0", "examples/quickstart.py"], "-n must be at least 1, got 0"),
    (["-n", "-2", "examples/quickstart.py"], "-n must be at least 1, got -2"),
    (["-n", "2", "examples/no_such_script.py"], "no such script: examples/no_such_script.py"),
])
def test_bad_launch_requests_are_refused_clearly(args, message):
    out = _ddprun("--dry-run", *args)
    assert out.returncode != 0
    assert message in out.stderr


def test_missing_mpiexec_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="pip install"):
        ddprun.find_mpiexec()


RANK_REPORT = textwrap.dedent("""
    import os, sys
    import ddpgrad.distributed as dist

    dist.init_process_group()
    print(f"rank {dist.get_rank()} of {dist.get_world_size()} "
          f"threads {os.environ.get('OPENBLAS_NUM_THREADS')} args {sys.argv[1:]}", flush=True)
    dist.barrier()
    sys.exit(int(sys.argv[1]) if dist.get_rank() == 1 else 0)
""")


def _mpi_available():
    return shutil.which("mpiexec") or os.access(Path(sys.executable).with_name("mpiexec"), os.X_OK)


@pytest.mark.skipif(not _mpi_available(), reason="needs an MPI launcher (pip install mpich)")
def test_two_rank_run_starts_both_ranks_with_their_thread_budget(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(RANK_REPORT)
    out = _ddprun("-n", "2", str(script), "0")
    assert out.returncode == 0, out.stderr
    threads = max(1, CORES // 2)
    # the two ranks' lines reach mpiexec's stdout concurrently: find them, whatever the line breaks
    found = sorted(re.findall(r"rank \d of \d threads \S+ args \['0'\]", out.stdout))
    assert found == [f"rank {r} of 2 threads {threads} args ['0']" for r in (0, 1)], out.stdout
    assert f"BLAS threads per rank: {threads}" in out.stderr


@pytest.mark.skipif(not _mpi_available(), reason="needs an MPI launcher (pip install mpich)")
def test_a_failing_rank_fails_the_launch(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(RANK_REPORT)
    out = _ddprun("-n", "2", str(script), "3")
    assert out.returncode != 0


HALF_BROKEN = textwrap.dedent("""
    import sys, time
    import ddpgrad as torch
    import ddpgrad.distributed as dist

    dist.init_process_group()
    if dist.get_rank() == 1:
        if sys.argv[1] == "raise":
            raise RuntimeError("rank 1 broke")
        time.sleep(60)  # a rank that hangs
    dist.all_reduce(torch.ones(4))
""")


@pytest.mark.skipif(not _mpi_available(), reason="needs an MPI launcher (pip install mpich)")
@pytest.mark.parametrize("failure,expected", [
    ("raise", "[rank 1] RuntimeError: rank 1 broke"),
    ("hang", "[rank 0] rank 0 of 2: allreduce"),
])
def test_a_broken_rank_ends_the_job_quickly_with_a_report(tmp_path, failure, expected):
    """What launch/README.md promises: an exception on one rank aborts all of them, and a rank
    that never joins a collective is reported after DDPGRAD_TIMEOUT seconds, not waited for."""
    script = tmp_path / "half_broken.py"
    script.write_text(HALF_BROKEN)
    out = _ddprun("-n", "2", str(script), failure, DDPGRAD_TIMEOUT="3")
    assert out.returncode != 0
    assert expected in out.stderr, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
