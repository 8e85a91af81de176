"""What the launcher that started this process announces: world size, rank, local rank.

Launchers tell each process its place through environment variables (MPI's launchers, Slurm's
srun, torchrun). ``announced(environ)`` collects every such claim, so that ``init_process_group``
can check MPI's world against all of them: a process that was started as one of N must never
train alone.

Standard library only, no ddpgrad imports: ddprun's per-rank bootstrap loads this file by path
before the user's script runs, so that nothing (NumPy included) is imported ahead of the script.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

MPI_SIZE_VARS = {
    "PMI_SIZE": "MPICH's Hydra mpiexec, Intel MPI, srun --mpi=pmi2",
    "PMIX_SIZE": "a PMIx launcher",
    "OMPI_COMM_WORLD_SIZE": "Open MPI's mpirun",
    "MV2_COMM_WORLD_SIZE": "MVAPICH2",
}
MPI_MIN_SIZE_VARS = {"MPI_LOCALNRANKS": "Hydra: ranks on this node, a lower bound on the world"}
MPI_RANK_VARS = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
SLURM_STEP_SIZE_VAR = "SLURM_STEP_NUM_TASKS"  # set by srun for the tasks of a step, not by sbatch
SLURM_RANK_VAR = "SLURM_PROCID"
TORCHRUN_SIZE_VAR, TORCHRUN_RANK_VAR = "WORLD_SIZE", "RANK"
LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK")
LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE", "LOCAL_WORLD_SIZE")
RANK_ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
"""What ddprun sets in each rank, as torchrun does: the names ported PyTorch scripts read."""

TERMINAL_COLUMNS_VAR = "DDPGRAD_TERMINAL_COLUMNS"
"""ddprun sets it when its own stderr is a terminal: the columns a rank's line has there (after
the ``[rank N] `` prefix). The ranks write to pipes, so this is how they know a terminal shows them."""

MPI, SLURM, TORCHRUN = "MPI launcher", "srun", "torchrun"


class LaunchError(RuntimeError):
    """The job was started in a way that would make its processes train apart (the message says
    what was announced, what MPI found and how to launch). ddprun prints it once, not per rank."""

    ddpgrad_user_error = True


@dataclass(frozen=True)
class Claim:
    """One variable's statement about the job: ``kind`` is "size", "min_size" or "rank"."""

    variable: str
    value: int
    kind: str
    launcher: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value}"

    def holds(self, size: int, rank: int) -> bool:
        if self.kind == "size":
            return self.value == size
        if self.kind == "min_size":
            return size >= self.value
        return self.value == rank


def _int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class Announcement:
    """Every claim the environment makes about this process's job (see ``announced``)."""

    claims: tuple[Claim, ...]

    @property
    def world_size(self) -> int:
        """The largest world any claim implies (1 without a launcher)."""
        sizes = [c.value + (c.kind == "rank") for c in self.claims]
        return max(sizes, default=1)

    @property
    def launchers(self) -> set[str]:
        return {c.launcher for c in self.claims}

    @property
    def torchrun_only(self) -> bool:
        """Started by torchrun (or something like it), with no MPI launcher or srun involved."""
        return self.launchers == {TORCHRUN}

    def mismatch(self, size: int, rank: int, library: str = "", script: str | None = None) -> str | None:
        """None if MPI's world (``size``, this ``rank``) agrees with every claim, else one line
        saying what the environment announced, what MPI found and how to launch the job."""
        wrong = [c for c in self.claims if not c.holds(size, rank)]
        if not wrong:
            return None
        # Sizes first: then the line is the same on every rank, and a launcher prints it once.
        shown = [c for c in wrong if c.kind != "rank"] or wrong
        expected = Announcement(tuple(shown)).world_size
        found = f"MPI's world has {size} rank{'s' if size != 1 else ''}"
        if shown is wrong:  # only ranks are wrong
            found += f" and says this is rank {rank}"
        launchers = {c.launcher for c in shown}
        said = ", ".join(map(str, shown))
        if size == 1 and SLURM in launchers:
            how = (f"srun gave MPI{f' ({library})' if library else ''} no way to connect the tasks: start "
                   "them with `srun --mpi=pmix` (Open MPI 5) or `srun --mpi=pmi2` (MPICH), whichever your "
                   "MPI speaks (`srun --mpi=list` shows the site's choices; launch/README.md)")
        elif size == 1 and MPI in launchers:
            how = (f"the MPI library mpi4py loaded{f' ({library})' if library else ''} is not the one whose "
                   "launcher started the job, so each process came up as a world of one; start the job with "
                   "that library's own launcher (ddprun uses the mpiexec beside this Python), or point mpi4py "
                   "at the launcher's MPI (launch/README.md)")
        else:
            how = f"unset the stale variables, or start the job with {launch_hint(expected, script)}"
        return f"init_process_group: the environment announces {expected} ranks ({said}), but {found}: {how}"

    def torchrun_error(self, script: str | None = None) -> str:
        """The one line to stop with when torchrun-style variables announce several ranks."""
        said = ", ".join(map(str, self.claims))
        n = self.world_size
        return (f"init_process_group: the environment announces {n} ranks ({said}) but no MPI launcher "
                f"started this process, so each process would train alone; torchrun can not start an MPI "
                f"job: start it with {launch_hint(n, script)}")


def launch_hint(ranks: int, script: str | None = None) -> str:
    if script is None:
        running = os.path.basename(sys.argv[0]) if sys.argv else ""
        script = running if running.endswith(".py") else "script.py"
    return f"`ddprun -n {ranks} {script}` or `mpiexec -n {ranks} python {script}`"


def announced(environ: Mapping[str, str] | None = None) -> Announcement:
    """Collect the claims of MPI's launchers, srun (within a step) and torchrun.

    srun's variables count only when no MPI launcher variable gives the world size: an mpiexec
    inside a Slurm allocation starts its node daemons with srun, and its ranks inherit the
    daemons' step (one task per node), not their own.
    """
    environ = os.environ if environ is None else environ
    claims = []

    def add(name, kind, launcher):
        value = _int(environ, name)
        if value is not None:
            claims.append(Claim(name, value, kind, launcher))

    for name in MPI_SIZE_VARS:
        add(name, "size", MPI)
    mpi_gives_size = bool(claims)
    for name in MPI_MIN_SIZE_VARS:
        add(name, "min_size", MPI)
    for name in MPI_RANK_VARS:
        add(name, "rank", MPI)
    if not mpi_gives_size and SLURM_STEP_SIZE_VAR in environ:
        add(SLURM_STEP_SIZE_VAR, "size", SLURM)
        add(SLURM_RANK_VAR, "rank", SLURM)
    add(TORCHRUN_SIZE_VAR, "size", TORCHRUN)
    add(TORCHRUN_RANK_VAR, "rank", TORCHRUN)
    return Announcement(tuple(claims))


def launcher_world_size(environ: Mapping[str, str] | None = None) -> int:
    """How many ranks the launcher that started this process says there are (1 if none)."""
    return announced(environ).world_size


def launcher_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank as its launcher announced it (0 without a launcher)."""
    ranks = [c.value for c in announced(environ).claims if c.kind == "rank"]
    return ranks[0] if ranks else 0


def local_rank(environ: Mapping[str, str] | None = None) -> int:
    """This rank's index among the ranks on its node (0 without a launcher): picks its GPU."""
    environ = os.environ if environ is None else environ
    return next((v for v in (_int(environ, n) for n in LOCAL_RANK_VARS) if v is not None), 0)


def local_world_size(environ: Mapping[str, str] | None = None) -> int | None:
    """How many ranks run on this node, if the launcher says (None if it does not)."""
    environ = os.environ if environ is None else environ
    return next((v for v in (_int(environ, n) for n in LOCAL_SIZE_VARS) if v is not None), None)
