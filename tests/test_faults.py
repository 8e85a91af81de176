"""No rank can hang an MPI job: every way a rank can end, on 4 ranks under mpiexec, as subprocesses
with an outer timeout. Each script prints the moment its rank fails (``FAILING AT <time>``), so the
test measures how long the job took to end after the failure, not the start-up."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_ENV_PREFIXES = ("PMI_", "PMIX_", "MPI_", "MPIR_", "HYDRA_", "OMPI_", "MV2_", "DDPGRAD_")
OUTER_TIMEOUT_S = 90
ENDS_WITHIN_S = 5.0
"""What the README promises: a job with a failed rank ends this fast after the failure (4 ranks)."""
RANKS = 4


def _mpiexec():
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="needs an MPI launcher (pip install mpich)")

PREAMBLE = """
import os, sys, time
import numpy as np
def failing(what):
    print(f"FAILING AT {time.time():.3f}: {what}", file=sys.stderr, flush=True)
"""

WITH_COMM = PREAMBLE + """
import ddpgrad.distributed as dist
dist.init_process_group()
comm = dist.get_comm()
rank = comm.rank
comm.allreduce(np.ones(3))
"""


def run_job(tmp_path, script, ranks=RANKS, **env):
    """(CompletedProcess, seconds from the first FAILING AT line to the job's end, or None)."""
    path = tmp_path / "job.py"
    path.write_text(script)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_ENV_PREFIXES)}
    clean.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **env)
    proc = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, str(path)], env=clean,
                          capture_output=True, text=True, timeout=OUTER_TIMEOUT_S)
    ended = time.time()
    marks = [float(t) for t in re.findall(r"FAILING AT ([\d.]+)", proc.stderr)]
    return proc, (ended - min(marks)) if marks else None


def assert_ended_promptly(proc, after):
    assert proc.returncode != 0, proc.stderr
    assert after is not None and after < ENDS_WITHIN_S, (after, proc.stderr)


# ---------------------------------------------------------------------------------- a rank ends
EXIT_CASES = {
    "sys_exit_3": ("sys.exit(3)", "rank 1 left the job after 1 collective call(s) here (it exited with code 3)"),
    "sys_exit_0": ("sys.exit(0)", "rank 1 left the job after 1 collective call(s) here (it exited with code 0)"),
    "raise_system_exit": ("raise SystemExit(4)", "rank 1 left the job after 1 collective call(s) here (its script ended"),
    "script_ends": ("pass", "rank 1 left the job after 1 collective call(s) here (its script ended"),
}


@pytest.mark.parametrize("case", list(EXIT_CASES))
def test_a_rank_that_exits_while_the_others_run_collectives_ends_the_job(tmp_path, case):
    how, message = EXIT_CASES[case]
    script = WITH_COMM + f"""
if rank == 1:
    failing("rank 1 leaves")
    {how}
else:
    time.sleep(0.3)
    comm.allreduce(np.ones(5))
    print("the others must never get here", flush=True)
"""
    proc, after = run_job(tmp_path, script)
    assert_ended_promptly(proc, after)
    assert message in proc.stderr, proc.stderr
    assert "allreduce #1" in proc.stderr and "never get here" not in proc.stdout


def test_a_rank_exiting_non_zero_ends_the_job_while_the_others_compute(tmp_path):
    script = WITH_COMM + """
if rank == 2:
    failing("rank 2 exits with 5")
    sys.exit(5)
time.sleep(30)  # long local work, no collective: only rank 2 itself can end the job
"""
    proc, after = run_job(tmp_path, script)
    assert_ended_promptly(proc, after)
    assert proc.returncode == 5, proc.returncode
    assert "[rank 2] this rank exited with code 5 while rank(s) 0, 1, 3 kept running" in proc.stderr, proc.stderr


def test_an_uncaught_exception_ends_the_job_with_its_traceback_and_every_rank_s_output(tmp_path):
    script = WITH_COMM + """
print(f"line from rank {rank}")  # block-buffered into a pipe: must not be lost by the abort
if rank == 3:
    time.sleep(0.3)
    failing("rank 3 raises")
    raise KeyError("deliberate")
comm.allreduce(np.ones(5))
"""
    proc, after = run_job(tmp_path, script)
    assert_ended_promptly(proc, after)
    assert "[rank 3] KeyError: 'deliberate'" in proc.stderr, proc.stderr
    for rank in range(RANKS):
        assert f"line from rank {rank}" in proc.stdout, proc.stdout


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_rank_killed_by_a_signal_ends_the_job(tmp_path, signal_name):
    script = WITH_COMM + f"""
import signal
if rank == 1:
    failing("rank 1 is killed")
    os.kill(os.getpid(), signal.{signal_name})
comm.allreduce(np.ones(5))
"""
    proc, after = run_job(tmp_path, script)
    assert_ended_promptly(proc, after)


# ---------------------------------------------------------------------------------- ranks that end together
def test_ranks_that_finish_at_different_times_end_cleanly(tmp_path):
    script = WITH_COMM + """
if rank == 0:
    time.sleep(3)  # rank 0's last local work (a plot, a checkpoint) after the others are done
    print("rank 0 finished its work", flush=True)
"""
    proc, _ = run_job(tmp_path, script)
    assert proc.returncode == 0, proc.stderr
    assert "rank 0 finished its work" in proc.stdout
    assert "left the job" not in proc.stderr and "Abort" not in proc.stderr, proc.stderr


def test_every_rank_exiting_with_the_same_error_ends_without_an_abort(tmp_path):
    script = WITH_COMM + """
failing("every rank exits with 2")
if rank == 0:
    print("error: a check that failed on every rank", file=sys.stderr, flush=True)
sys.exit(2)
"""
    proc, after = run_job(tmp_path, script)
    assert_ended_promptly(proc, after)
    assert proc.stderr.count("error: a check that failed on every rank") == 1, proc.stderr
    assert "Abort" not in proc.stderr and "kept running" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------- start-up
STARTUP_CASES = {
    "broken_import": "failing('rank 1 fails before init'); raise ImportError('simulated broken import on one node')",
    "slow_rank": "failing('rank 1 is slow before init'); time.sleep(60)",
    "exit_0_before_init": "failing('rank 1 leaves before init'); sys.exit(0)",
}


@pytest.mark.parametrize("case", list(STARTUP_CASES))
def test_a_rank_missing_at_start_up_ends_the_job_after_the_start_up_deadline(tmp_path, case):
    deadline = 2
    script = PREAMBLE + f"""
if os.environ.get("PMI_RANK") == "1":
    {STARTUP_CASES[case]}
import ddpgrad.distributed as dist
dist.init_process_group()
print("initialised", flush=True)
"""
    proc, after = run_job(tmp_path, script, DDPGRAD_TIMEOUT=str(deadline))
    assert_ended_promptly(proc, after - deadline if after is not None else None)
    assert f"MPI start-up did not finish within {deadline} s" in proc.stderr, proc.stderr
    assert "initialised" not in proc.stdout
