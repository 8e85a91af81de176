"""No silent single-process jobs: init_process_group checks every world size the environment
announces (MPI launchers, srun, torchrun) against MPI's, in simulated launcher environments."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from launch_helpers import clean_env, mpi_available, mpiexec, python

from ddpgrad.launch.environment import announced, launcher_rank, launcher_world_size, local_rank, local_world_size

needs_mpi = pytest.mark.skipif(not mpi_available(), reason="needs an MPI launcher (pip install mpich)")

INIT = """
import sys
import ddpgrad.distributed as dist
try:
    dist.init_process_group()
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
    print("mpi4py imported:", "mpi4py" in sys.modules)
    sys.exit(3)
print(f"{dist.get_backend()} rank {dist.get_rank()} of {dist.get_world_size()}")
print("mpi4py imported:", "mpi4py" in sys.modules)
"""

SRUN_PMIX = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "4",
             "SLURM_PROCID": "2", "SLURM_LOCALID": "0", "PMIX_RANK": "2", "PMIX_NAMESPACE": "slurm.pmix.77.0"}
SRUN_WITHOUT_MPI = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4",
                    "SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}
TORCHRUN = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
            "TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
OPEN_MPI = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
HYDRA_WITHOUT_PMI = {"PMI_SIZE": "2", "PMI_RANK": "1", "MPI_LOCALNRANKS": "2", "MPI_LOCALRANKID": "1"}
SLURM_BATCH_SCRIPT = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "32", "SLURM_NNODES": "2", "SLURM_LOCALID": "0"}


def _init(**env):
    out = python(INIT, **env)
    return out.returncode, out.stdout.strip().splitlines(), out.stderr


# -- what the environment announces --------------------------------------------------------------

def test_every_launcher_is_heard():
    assert launcher_world_size({}) == 1 and launcher_rank({}) == 0
    assert launcher_world_size({"PMI_SIZE": "4", "PMI_RANK": "2"}) == 4
    assert launcher_world_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert launcher_world_size({"MV2_COMM_WORLD_SIZE": "5"}) == 5
    assert launcher_world_size({"PMIX_RANK": "6"}) == 7  # a rank implies a world of at least rank + 1
    assert launcher_world_size(SRUN_PMIX) == 4 and launcher_rank(SRUN_PMIX) == 2
    assert launcher_world_size(TORCHRUN) == 4 and launcher_rank(TORCHRUN) == 1
    assert local_rank({}) == 0 and local_world_size({}) is None
    assert local_rank({"MPI_LOCALRANKID": "1"}) == 1
    assert local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": "3"}) == 3
    assert local_world_size(OPEN_MPI) == 2 and local_world_size(HYDRA_WITHOUT_PMI) == 2


def test_srun_variables_yield_to_an_mpi_launchers_inside_an_allocation():
    """mpiexec inside a Slurm job starts one daemon per node with srun: its ranks inherit that
    step (2 tasks), but the world is what mpiexec says (32)."""
    env = {**SRUN_WITHOUT_MPI, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "PMI_SIZE": "32", "PMI_RANK": "17"}
    launch = announced(env)
    assert launch.world_size == 32
    assert launch.mismatch(32, 17) is None


def test_a_slurm_batch_script_is_no_launch():
    """sbatch's SLURM_NTASKS describes the allocation, not this process: only srun starts tasks."""
    assert launcher_world_size(SLURM_BATCH_SCRIPT) == 1


def test_mismatch_lines_say_expected_found_and_how_to_launch():
    line = announced(SRUN_WITHOUT_MPI).mismatch(1, 0, "MPICH 5.0.2", script="train.py")
    assert line.startswith("init_process_group: the environment announces 4 ranks (SLURM_STEP_NUM_TASKS=4)")
    assert "MPI's world has 1 rank" in line and "srun --mpi=pmix" in line and "(MPICH 5.0.2)" in line
    assert "\n" not in line
    line = announced(HYDRA_WITHOUT_PMI).mismatch(1, 0, "Open MPI v5.0.3", script="train.py")
    assert "(PMI_SIZE=2, MPI_LOCALNRANKS=2)" in line and "Open MPI v5.0.3" in line and "launch/README.md" in line
    assert announced(TORCHRUN).mismatch(4, 1) is None
    line = announced(TORCHRUN).mismatch(4, 3, script="train.py")
    assert "RANK=1" in line and "says this is rank 3" in line
    line = announced(TORCHRUN).torchrun_error("train.py")
    assert "torchrun can not start an MPI job" in line and "`ddprun -n 4 train.py`" in line


def test_a_stale_smaller_world_size_is_named_with_its_own_value():
    line = announced({"PMI_SIZE": "4", "PMI_RANK": "1", "WORLD_SIZE": "2"}).mismatch(4, 1, script="train.py")
    assert line.startswith("init_process_group: the environment announces 2 ranks (WORLD_SIZE=2), "
                           "but MPI's world has 4 ranks: unset the stale variables")


def test_the_mismatch_line_is_the_same_on_every_rank():
    """So that a launcher can print it once: sizes are named, not each rank's own index."""
    lines = {announced({**HYDRA_WITHOUT_PMI, "PMI_RANK": str(r)}).mismatch(1, 0, "x") for r in range(2)}
    assert len(lines) == 1


# -- init_process_group in simulated environments (subprocesses) --------------------------------

def test_a_plain_process_is_a_world_of_one_without_mpi():
    status, out, err = _init()
    assert status == 0, err
    assert out == ["local rank 0 of 1", "mpi4py imported: False"]


def test_torchrun_environment_stops_before_touching_mpi():
    status, out, err = _init(**TORCHRUN)
    assert status == 3, (out, err)
    assert out[0].startswith("LaunchError: init_process_group: the environment announces 4 ranks (WORLD_SIZE=4, RANK=1)")
    assert "torchrun can not start an MPI job" in out[0] and "ddprun -n 4" in out[0]
    assert out[1] == "mpi4py imported: False"


@needs_mpi
@pytest.mark.parametrize("env,says", [
    (SRUN_WITHOUT_MPI, "srun --mpi=pmix"),  # srun without a PMI plugin: every task a world of one
    (OPEN_MPI, "is not the one whose launcher started the job"),  # Open MPI's mpirun, MPICH's library
    (HYDRA_WITHOUT_PMI, "is not the one whose launcher started the job"),
], ids=["srun-without-pmi", "open-mpi-launcher", "hydra-variables-without-its-pmi"])
def test_mpi_singletons_in_an_announced_job_are_an_error(env, says):
    status, out, err = _init(**env)
    assert status == 3, (out, err)
    assert out[0].startswith("LaunchError: init_process_group: the environment announces ")
    assert "but MPI's world has 1 rank" in out[0] and says in out[0]


@needs_mpi
def test_srun_pmix_environment_never_trains_alone():
    """MPICH (the wheel) refuses a PMIx environment itself; with an MPI that speaks PMIx this is
    a real job, with one that does not, the check above stops it. Either way: no world of one."""
    status, out, err = _init(**SRUN_PMIX)
    assert status != 0
    assert "local rank 0 of 1" not in out


@needs_mpi
@pytest.mark.parametrize("ranks", [1, 2])
def test_mpiexec_jobs_start(ranks):
    out = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, "-c", INIT], capture_output=True, text=True,
                         timeout=90, env=clean_env())
    assert out.returncode == 0, out.stderr
    backend = "local" if ranks == 1 else "mpi"
    # plain mpiexec passes the ranks' output on as it comes, lines may run together: find them
    assert sorted(re.findall(r"(?:local|mpi) rank \d of \d", out.stdout)) == [
        f"{backend} rank {r} of {ranks}" for r in range(ranks)]


@needs_mpi
def test_a_stale_world_size_under_mpiexec_is_an_error_on_every_rank():
    out = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-c", INIT], capture_output=True, text=True,
                         timeout=90, env=clean_env(WORLD_SIZE="4"))
    assert out.returncode != 0
    assert out.stdout.count("LaunchError: init_process_group: the environment announces 4 ranks "
                            "(WORLD_SIZE=4), but MPI's world has 2 ranks") == 2, out.stdout
