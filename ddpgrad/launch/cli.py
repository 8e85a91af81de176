"""``ddprun``: run a script on N MPI ranks, as ``torchrun`` / ``horovodrun`` users expect.

    ddprun -n 4 train.py --epochs 5
    ddprun -n 8 -H node-a:4,node-b:4 train.py        # or --hostfile hosts
    ddprun -n 4 --max-restarts 3 train.py --resume   # a failed rank restarts the job

Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, ``cores // ranks per node`` BLAS
threads (unless set), and its output lines prefixed ``[rank N]``. See launch/README.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys

from . import rank as rank_bootstrap
from .environment import TERMINAL_COLUMNS_VAR
from .job import Job, say
from .mpiexec import (
    THREAD_VARS,
    available_cores,
    find_mpiexec,
    flavor,
    forwarding_arguments,
    hosts_arguments,
    parse_hosts,
    thread_environment,
)

DEFAULT_START_TIMEOUT_S = 120.0
"""Every rank must have started (its Python running the bootstrap) within this. Local starts take
about a second; ssh to many nodes and a cold Python on a network file system take tens of seconds.
A job not started in 2 minutes is stuck (a node that does not answer, a launcher waiting)."""
RESTART_VARS = ("DDPGRAD_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT")
MAX_RESTARTS_VARS = ("DDPGRAD_MAX_RESTARTS", "TORCHELASTIC_MAX_RESTARTS")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddprun", description="Run a script on N MPI ranks (ddpgrad's launcher).")
    p.add_argument("-n", "-np", "--nproc", type=int, default=None,
                   help="number of ranks (default: the slots of the hosts, else the cores this process may use)")
    p.add_argument("-H", "--hosts", default=None, help='hosts and slots, "node-a:4,node-b:4"')
    p.add_argument("--hostfile", default=None, help='file of hosts, one a line: "node-a:4" or "node-a slots=4"')
    p.add_argument("--max-restarts", type=int, default=0,
                   help="when the job fails, start it again up to this many times (the script resumes from "
                        "its checkpoint; DDPGRAD_RESTART_COUNT / TORCHELASTIC_RESTART_COUNT tell it which try)")
    p.add_argument("--start-timeout", type=float, default=DEFAULT_START_TIMEOUT_S,
                   help=f"seconds for every rank to start, else the job is stopped (default {DEFAULT_START_TIMEOUT_S:g})")
    p.add_argument("--rank0-only", action="store_true",
                   help="show only rank 0's standard output (every rank's stderr is still shown)")
    p.add_argument("--mpiexec", default=None, help="path of the mpiexec to use (default: the one beside this Python)")
    p.add_argument("--mpi-args", default="", help='extra mpiexec options, one string: "-bind-to core"')
    p.add_argument("--dry-run", action="store_true", help="print the command and environment, do not run")
    p.add_argument("script", help="the Python script every rank runs")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


def _check(args, hosts):
    if args.nproc is not None and args.nproc < 1:
        raise SystemExit(f"ddprun: -n must be at least 1, got {args.nproc}")
    if hosts and args.nproc is not None and args.nproc > sum(s for _, s in hosts):
        raise SystemExit(f"ddprun: -n {args.nproc} is more ranks than the {sum(s for _, s in hosts)} slots of "
                         "the hosts: add slots or hosts, or lower -n")
    if args.max_restarts < 0:
        raise SystemExit(f"ddprun: --max-restarts must be 0 or more, got {args.max_restarts}")
    if not args.start_timeout > 0:
        raise SystemExit(f"ddprun: --start-timeout must be more than 0 seconds, got {args.start_timeout:g}")
    if not os.path.isfile(args.script):
        raise SystemExit(f"ddprun: no such script: {args.script}")


def _hosts(args) -> list[tuple[str, int]]:
    if args.hosts and args.hostfile:
        raise SystemExit("ddprun: give the hosts with -H or with --hostfile, not both")
    if args.hostfile:
        try:
            with open(args.hostfile) as f:
                return parse_hosts(f.read(), args.hostfile)
        except OSError as exc:
            raise SystemExit(f"ddprun: can not read --hostfile {args.hostfile}: {exc.strerror}") from None
    return parse_hosts(args.hosts, "-H") if args.hosts else []


def _terminal_columns(ranks: int) -> dict[str, str]:
    if not sys.stderr.isatty():
        return {}
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return {}
    return {TERMINAL_COLUMNS_VAR: str(max(1, columns - len(f"[rank {ranks - 1}] ")))}


def plan(args) -> tuple[list[str], dict[str, str], dict[str, str], int]:
    """(command, environment of the ranks, the variables ddprun added, ranks)."""
    hosts = _hosts(args)
    _check(args, hosts)
    ranks = args.nproc or (sum(s for _, s in hosts) if hosts else available_cores())
    per_node = min(ranks, max(s for _, s in hosts)) if hosts else ranks
    added = thread_environment(per_node, os.environ)
    added.update({name: str(args.max_restarts) for name in MAX_RESTARTS_VARS})
    added.update({name: "0" for name in RESTART_VARS})
    added.update(_terminal_columns(ranks))
    mpiexec = args.mpiexec or find_mpiexec()
    kind = flavor(mpiexec) if hosts else None  # local ranks inherit the environment anyway
    command = [mpiexec, "-n", str(ranks)]
    if hosts:
        command += hosts_arguments(kind, hosts)
    if kind is not None:
        command += forwarding_arguments(kind, [*added, *(k for k in os.environ if k.startswith("DDPGRAD_"))])
    command += shlex.split(args.mpi_args)
    command += [sys.executable, os.path.abspath(rank_bootstrap.__file__), "--world-size", str(ranks),
                "--output", "rank0" if args.rank0_only else "all", "--", args.script, *args.args]
    return command, {**os.environ, **added}, added, ranks


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command, env, added, ranks = plan(args)
    if args.dry_run:
        print(shlex.join(command))
        for var in THREAD_VARS:
            print(f"{var}={env[var]}" + ("" if var in added else "  (already set)"))
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP):  # scancel, a closed terminal: stop the ranks too
        signal.signal(sig, _interrupt)
    say(f"{ranks} rank(s), BLAS threads per rank: {env['OPENBLAS_NUM_THREADS']}, {command[0]}: "
        f"{shlex.join([args.script, *args.args])}")
    for attempt in range(args.max_restarts + 1):
        env.update({name: str(attempt) for name in RESTART_VARS})
        outcome = Job(command, env, ranks, args.start_timeout).run()
        if outcome.interrupted:
            say(f"interrupted: stopped all {ranks} rank(s)")
            return outcome.status
        if outcome.status == 0 or attempt == args.max_restarts:
            return outcome.status
        if outcome.user_error:
            say("not restarting: the script stopped with an error message, a restart would stop the same way")
            return outcome.status
        say(f"the job failed (exit {outcome.status}); starting it again, restart {attempt + 1} of "
            f"{args.max_restarts} (DDPGRAD_RESTART_COUNT={attempt + 1})")
    return outcome.status
