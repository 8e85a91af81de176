"""ddprun (``python -m ddpgrad.launch``, ``launch/ddprun.py``): the command it builds, the
environment and output of its ranks, restarts from a checkpoint, the start-up deadline, Ctrl-C."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from launch_helpers import CORES, ROOT, THREAD_VARS, TIMEOUT_S, clean_env, ddprun, mpi_available

from ddpgrad.launch import mpiexec as mpiexec_mod
from ddpgrad.launch.cli import main
from ddpgrad.launch.rank import CONTROL, control_line, parse_control, split_lines

needs_mpi = pytest.mark.skipif(not mpi_available(), reason="needs an MPI launcher (pip install mpich)")
BOOTSTRAP = str(ROOT / "ddpgrad" / "launch" / "rank.py")


@pytest.fixture
def dry_run(monkeypatch, capsys):
    """``ddprun --dry-run ARGS`` in this process, from the repository root, in a clean launcher
    environment plus ``set_vars``: (command as a list, {VAR: value} printed)."""
    monkeypatch.chdir(ROOT)

    def run(*args, **set_vars):
        clean = clean_env(**set_vars)
        for name in list(os.environ):
            if name not in clean:
                monkeypatch.delenv(name)
        for name, value in set_vars.items():
            monkeypatch.setenv(name, value)
        assert main(["--dry-run", *args]) == 0
        lines = capsys.readouterr().out.splitlines()
        env = dict(line.split("  ")[0].split("=", 1) for line in lines[1:])
        return shlex.split(lines[0]), env

    return run


def _script_part(cmd):
    """What each rank runs: [python, bootstrap, options..., "--", script, args...]."""
    start = cmd.index(sys.executable)
    return cmd[start:]


def _fake_mpiexec(tmp_path, version_text, body="exit 0"):
    path = tmp_path / "mpiexec"
    path.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "{version_text}"; exit 0; fi\n{body}\n')
    path.chmod(0o755)
    return str(path)


# -- the command -------------------------------------------------------------------------------

@pytest.mark.parametrize("ranks,cores,threads", [(1, 16, 16), (2, 2, 1), (4, 2, 1), (3, 16, 5), (16, 16, 1), (2, 1, 1)])
def test_blas_threads_share_the_cores_and_never_drop_below_one(ranks, cores, threads):
    assert mpiexec_mod.blas_threads(ranks, cores) == threads


def test_dry_run_prints_the_command_and_the_thread_budget(dry_run):
    cmd, env = dry_run("-n", "2", "examples/train_mlp.py", "--epochs", "3", "--hidden", "8", "8")
    assert Path(cmd[0]).name in ("mpiexec", "mpirun") and os.access(cmd[0], os.X_OK)
    assert cmd[1:3] == ["-n", "2"]
    assert _script_part(cmd) == [sys.executable, BOOTSTRAP, "--world-size", "2", "--output", "all", "--",
                                 "examples/train_mlp.py", "--epochs", "3", "--hidden", "8", "8"]
    assert env == {var: str(max(1, CORES // 2)) for var in THREAD_VARS}


def test_mpiexec_beside_the_interpreter_is_preferred(dry_run):
    beside = Path(sys.executable).with_name("mpiexec")
    if not os.access(beside, os.X_OK):
        pytest.skip("no mpiexec installed beside this Python (the mpich wheel puts one there)")
    cmd, _ = dry_run("-n", "1", "examples/quickstart.py", PATH="/usr/bin:/bin")
    assert cmd[0] == str(beside)


def test_script_arguments_that_look_like_launcher_options_go_to_the_script(dry_run):
    cmd, _ = dry_run("-n", "2", "examples/quickstart.py", "-n", "3", "--dry-run", "--max-restarts", "x")
    assert cmd[1:3] == ["-n", "2"]
    assert cmd[-5:] == ["-n", "3", "--dry-run", "--max-restarts", "x"]


def test_default_rank_count_is_the_usable_cores(dry_run):
    cmd, env = dry_run("examples/quickstart.py")
    assert cmd[1:3] == ["-n", str(CORES)]
    assert env["OPENBLAS_NUM_THREADS"] == "1"


def test_thread_settings_already_made_are_kept(dry_run):
    _, env = dry_run("-n", "1", "examples/quickstart.py", OPENBLAS_NUM_THREADS="3", OMP_NUM_THREADS="5")
    assert env == {"OPENBLAS_NUM_THREADS": "3", "OMP_NUM_THREADS": "5", "MKL_NUM_THREADS": str(CORES)}


def test_explicit_mpiexec_and_extra_mpi_arguments_are_used(dry_run):
    cmd, _ = dry_run("--mpiexec", "/opt/site-mpi/bin/mpirun", "--mpi-args", "-bind-to core", "-n", "2",
                      "examples/quickstart.py")
    assert cmd[:5] == ["/opt/site-mpi/bin/mpirun", "-n", "2", "-bind-to", "core"]


def test_rank0_only_reaches_the_bootstrap(dry_run):
    cmd, _ = dry_run("-n", "2", "--rank0-only", "examples/quickstart.py")
    assert _script_part(cmd)[2:6] == ["--world-size", "2", "--output", "rank0"]


@pytest.mark.parametrize("version,expected", [
    ("HYDRA build details:\n    Version: 5.0.2", ["-hosts", "node-a:4,node-b:2"]),
    ("mpirun (Open MPI) 5.0.3", ["--host", "node-a:4,node-b:2"]),
])
def test_hosts_become_the_options_of_each_mpi(tmp_path, version, expected, dry_run):
    fake = _fake_mpiexec(tmp_path, version)
    cmd, env = dry_run("--mpiexec", fake, "-H", "node-a:4,node-b:2", "examples/quickstart.py")
    assert cmd[1:3] == ["-n", "6"]  # default: every slot
    assert cmd[3:5] == expected
    # threads per rank: this node's cores over the most ranks any node gets
    assert env["OPENBLAS_NUM_THREADS"] == str(max(1, CORES // 4))
    forwarded = {cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-x"}
    if "Open MPI" in version:  # Open MPI forwards only what it is told to
        assert {"OPENBLAS_NUM_THREADS", "DDPGRAD_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"} <= forwarded
    else:
        assert not forwarded


def test_hostfile_in_either_mpi_style_gives_the_same_hosts(tmp_path, dry_run):
    text = "# nodes\nnode-a:4\nnode-b slots=2   # the small one\n\nnode-c\n"
    assert mpiexec_mod.parse_hosts(text, "f") == [("node-a", 4), ("node-b", 2), ("node-c", 1)]
    hostfile = tmp_path / "hosts"
    hostfile.write_text(text)
    fake = _fake_mpiexec(tmp_path, "HYDRA build details:")
    cmd, _ = dry_run("--mpiexec", fake, "--hostfile", str(hostfile), "-n", "5", "examples/quickstart.py")
    assert cmd[1:5] == ["-n", "5", "-hosts", "node-a:4,node-b:2,node-c:1"]


def test_launch_hostfile_example_parses():
    hosts = mpiexec_mod.parse_hosts((ROOT / "launch" / "hostfile.example").read_text(), "example")
    assert hosts and all(slots >= 1 for _, slots in hosts)


@pytest.mark.parametrize("args,message", [
    (["-n", "0", "examples/quickstart.py"], "-n must be at least 1, got 0"),
    (["-n", "-2", "examples/quickstart.py"], "-n must be at least 1, got -2"),
    (["-n", "2", "examples/no_such_script.py"], "no such script: examples/no_such_script.py"),
    (["--max-restarts", "-1", "examples/quickstart.py"], "--max-restarts must be 0 or more, got -1"),
    (["--start-timeout", "0", "examples/quickstart.py"], "--start-timeout must be more than 0 seconds, got 0"),
    (["-H", "node-a:0", "examples/quickstart.py"], "bad host entry 'node-a:0' in -H"),
    (["-H", "a:2", "--hostfile", "h", "examples/quickstart.py"], "not both"),
    (["-H", "a:2", "-n", "3", "examples/quickstart.py"], "-n 3 is more ranks than the 2 slots"),
    (["--hostfile", "no/such/hosts", "examples/quickstart.py"], "can not read --hostfile no/such/hosts"),
])
def test_bad_launch_requests_are_refused_clearly(monkeypatch, args, message):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as refused:
        main(["--dry-run", *args])
    assert message in str(refused.value.code)


def test_a_refused_request_is_one_line_and_a_failure_status():
    out = ddprun("-n", "0", "examples/quickstart.py")
    assert out.returncode != 0
    assert out.stderr.splitlines() == ["ddprun: -n must be at least 1, got 0"]


def test_unknown_mpi_with_hosts_says_to_pass_them_yourself(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    fake = _fake_mpiexec(tmp_path, "some other MPI 1.0")
    with pytest.raises(SystemExit, match="--mpi-args"):
        main(["--dry-run", "--mpiexec", fake, "-H", "a:2", "examples/quickstart.py"])


def test_missing_mpiexec_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="pip install"):
        mpiexec_mod.find_mpiexec()


def test_ranks_learn_the_terminal_width_only_when_ddprun_has_a_terminal(monkeypatch):
    from ddpgrad.launch import cli

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert cli._terminal_columns(4) == {}
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(sys.stderr, "fileno", lambda: 2)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((100, 30)))
    assert cli._terminal_columns(12) == {"DDPGRAD_TERMINAL_COLUMNS": str(100 - len("[rank 11] "))}


def test_clone_script_is_the_same_launcher():
    spec = importlib.util.spec_from_file_location("ddprun_script", ROOT / "launch" / "ddprun.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from ddpgrad.launch.cli import main

    assert module.main is main
    out = subprocess.run([sys.executable, str(ROOT / "launch" / "ddprun.py"), "--dry-run", "-n", "2",
                          "examples/quickstart.py"], cwd=ROOT, env=clean_env(), capture_output=True,
                         text=True, timeout=TIMEOUT_S)
    assert out.returncode == 0 and BOOTSTRAP in out.stdout, out.stderr


# -- the output protocol -------------------------------------------------------------------------

def test_lines_split_at_newlines_and_carriage_returns_keep_their_endings():
    lines, rest = split_lines(b"a\nb\r\nbar 1\rbar 2\rpart")
    assert lines == [b"a\n", b"b\r\n", b"bar 1\r", b"bar 2\r"] and rest == b"part"
    lines, rest = split_lines(b"x" * (1 << 17))
    assert lines == [b"x" * (1 << 17)] and rest == b""  # an endless line is passed on, not held


def test_control_lines_round_trip_and_ordinary_lines_are_not_control():
    line = control_line("message", 3, "error: bad --lr 0; use a positive value")
    assert line.startswith(CONTROL) and line.endswith(b"\n")
    assert parse_control(line) == ("message", 3, "error: bad --lr 0; use a positive value")
    assert parse_control(control_line("started", 0)) == ("started", 0, "")
    assert parse_control(b"[rank 0] started 0\n") is None


# -- real jobs -----------------------------------------------------------------------------------

RANK_REPORT = textwrap.dedent("""
    import os, subprocess, sys
    import ddpgrad.distributed as dist

    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "OPENBLAS_NUM_THREADS")
    before = " ".join(f"{n}={os.environ.get(n)}" for n in names)  # what a script sees before init
    dist.init_process_group()
    print(f"rank {dist.get_rank()} of {dist.get_world_size()} {before} args {sys.argv[1:]}")
    print(f"to stderr from {dist.get_rank()}", file=sys.stderr)
    os.write(1, b"written to fd 1\\nin two lines\\n")
    subprocess.run(["echo", "from a child process"], check=True)
    dist.barrier()
    sys.exit(int(sys.argv[1]) if dist.get_rank() == 1 else 0)
""")


@needs_mpi
def test_ranks_get_torchrun_variables_thread_budget_and_rank_prefixed_lines(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(RANK_REPORT)
    out = ddprun("-n", "2", str(script), "0")
    assert out.returncode == 0, out.stderr
    threads = max(1, CORES // 2)
    for r in (0, 1):
        assert (f"[rank {r}] rank {r} of 2 RANK={r} LOCAL_RANK={r} WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 "
                f"OPENBLAS_NUM_THREADS={threads} args ['0']") in out.stdout.splitlines()
        for line in ("written to fd 1", "in two lines", "from a child process"):
            assert f"[rank {r}] {line}" in out.stdout.splitlines()
        assert f"[rank {r}] to stderr from {r}" in out.stderr.splitlines()
    assert all(re.match(r"\[rank [01]\] ", line) for line in out.stdout.splitlines()), out.stdout
    assert "\x1e" not in out.stdout + out.stderr  # control lines never reach the user
    assert f"BLAS threads per rank: {threads}" in out.stderr


@needs_mpi
def test_redrawn_and_unfinished_lines_pass_through_prefixed(tmp_path):
    """A progress bar's "\\r" redraws each get the prefix (a terminal then overwrites the line);
    a line still unfinished when the rank exits is ended, not lost."""
    script = tmp_path / "bar.py"
    script.write_text("import sys, time\nfor i in range(3):\n    sys.stderr.write(f'\\rbar {i}'); sys.stderr.flush()\n"
                      "    time.sleep(0.3)\nsys.stderr.write('\\n')\nprint('no newline', end='')\n")
    out = subprocess.run([sys.executable, "-m", "ddpgrad.launch", "-n", "1", str(script)], cwd=ROOT,
                         env=clean_env(), capture_output=True, timeout=TIMEOUT_S)  # bytes: keep the \r
    assert out.returncode == 0, out.stderr
    assert b"\r[rank 0] bar 0\r[rank 0] bar 1\r[rank 0] bar 2\n" in out.stderr, out.stderr
    assert out.stdout == b"[rank 0] no newline\n"


@needs_mpi
def test_two_nodes_give_each_rank_its_node_local_rank_and_thread_budget(tmp_path):
    """-H with two names for this machine: Hydra runs them as two nodes (it starts local ones
    itself, no ssh), one rank each."""
    if mpiexec_mod.flavor(mpiexec_mod.find_mpiexec()) != mpiexec_mod.HYDRA:
        pytest.skip("needs MPICH's Hydra mpiexec")
    script = tmp_path / "report.py"
    script.write_text(RANK_REPORT)
    out = ddprun("-H", f"{socket.gethostname()}:1,localhost:1", str(script), "0")
    assert out.returncode == 0, out.stderr
    for r in (0, 1):  # per node: 1 rank, so all this node's cores for its BLAS
        assert (f"[rank {r}] rank {r} of 2 RANK={r} LOCAL_RANK=0 WORLD_SIZE=2 LOCAL_WORLD_SIZE=1 "
                f"OPENBLAS_NUM_THREADS={CORES} args ['0']") in out.stdout.splitlines(), out.stdout


@needs_mpi
def test_rank0_only_drops_the_other_ranks_stdout_but_not_their_stderr(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(RANK_REPORT)
    out = ddprun("-n", "2", "--rank0-only", str(script), "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() and all(line.startswith("[rank 0] ") for line in out.stdout.splitlines())
    assert "[rank 1] to stderr from 1" in out.stderr.splitlines()


@needs_mpi
def test_a_failing_rank_fails_the_launch_with_its_status(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(RANK_REPORT)
    out = ddprun("-n", "2", str(script), "3")
    assert out.returncode == 3, out.stderr


USER_ERROR = textwrap.dedent("""
    import sys
    import ddpgrad.distributed as dist

    dist.init_process_group()
    if sys.argv[1] == "exit":
        raise SystemExit(f"error: --batch-size 7 does not divide evenly over {dist.get_world_size()} ranks")
""")


@needs_mpi
def test_a_user_error_on_every_rank_is_printed_once_and_not_restarted(tmp_path):
    script = tmp_path / "user_error.py"
    script.write_text(USER_ERROR)
    out = ddprun("-n", "3", "--max-restarts", "2", str(script), "exit")
    assert out.returncode == 1
    message = "error: --batch-size 7 does not divide evenly over 3 ranks"
    assert out.stderr.count(message) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert "not restarting" in out.stderr and "restart 1 of" not in out.stderr


@needs_mpi
def test_a_launch_mismatch_is_printed_once(tmp_path):
    """A stale WORLD_SIZE in the caller's environment is overridden by ddprun, but the one the
    script itself sets is checked, and the mismatch reported by all ranks shows once."""
    script = tmp_path / "stale.py"
    script.write_text("import os\nos.environ['WORLD_SIZE'] = '8'\n"
                      "import ddpgrad.distributed as dist\ndist.init_process_group()\n")
    out = ddprun("-n", "2", str(script), WORLD_SIZE="5")
    assert out.returncode == 1
    assert out.stderr.count("LaunchError: init_process_group: the environment announces 8 ranks (WORLD_SIZE=8)") == 1, out.stderr
    assert "Traceback" not in out.stderr


@needs_mpi
def test_an_argparse_error_is_printed_once_with_argparses_status(tmp_path):
    script = tmp_path / "cli.py"
    script.write_text("import argparse\np = argparse.ArgumentParser()\np.add_argument('--epochs', type=int)\n"
                      "p.parse_args()\n")
    out = ddprun("-n", "2", "--max-restarts", "1", str(script), "--epochs", "many")
    assert out.returncode == 2
    error = "cli.py: error: argument --epochs: invalid int value: 'many'"
    assert out.stderr.count(error) == 1 and out.stderr.count("usage: cli.py") == 1, out.stderr
    assert "not restarting" in out.stderr


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


@needs_mpi
@pytest.mark.parametrize("failure,expected", [
    ("raise", "[rank 1] RuntimeError: rank 1 broke"),
    ("hang", "[rank 0] rank 0 of 2: allreduce"),
])
def test_a_broken_rank_ends_the_job_quickly_with_a_report(tmp_path, failure, expected):
    """What launch/README.md promises: an exception on one rank aborts all of them, and a rank
    that never joins a collective is reported after DDPGRAD_TIMEOUT seconds, not waited for."""
    script = tmp_path / "half_broken.py"
    script.write_text(HALF_BROKEN)
    out = ddprun("-n", "2", str(script), failure, DDPGRAD_TIMEOUT="3")
    assert out.returncode != 0
    assert expected in out.stderr, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    if failure == "raise":  # the traceback starts at the script, as under plain python
        tb = out.stderr[out.stderr.index("[rank 1] Traceback"):]
        assert "runpy" not in tb and "rank.py" not in tb and "half_broken.py" in tb


CHECKPOINTED = textwrap.dedent("""
    import os, sys
    import numpy as np
    import ddpgrad as torch
    import ddpgrad.distributed as dist
    from ddpgrad.nn.parallel import DistributedDataParallel

    checkpoint, result, fail_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    STEPS = 6
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start = 0
    if os.path.exists(checkpoint):
        state = torch.load(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    data = np.random.default_rng(1).standard_normal((STEPS, world, 8, 6)).astype(np.float32)
    for step in range(start, STEPS):
        if step == fail_at and rank == 1 and os.environ["DDPGRAD_RESTART_COUNT"] == "0":
            raise RuntimeError(f"rank 1 fails on purpose at step {step}")
        x, y = torch.tensor(data[step, rank, :, :4]), torch.tensor(data[step, rank, :, 4:])
        loss = ((ddp(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1}, checkpoint)
        dist.barrier()
    if rank == 0:
        params = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
        np.savez(result, params=params, resumed_from=start,
                 restart=int(os.environ["DDPGRAD_RESTART_COUNT"]), torchelastic=int(os.environ["TORCHELASTIC_RESTART_COUNT"]))
""")


@needs_mpi
def test_max_restarts_resumes_from_the_checkpoint_and_ends_like_an_uninterrupted_run(tmp_path):
    script = tmp_path / "checkpointed.py"
    script.write_text(CHECKPOINTED)
    clean = ddprun("-n", "2", str(script), str(tmp_path / "a.ckpt"), str(tmp_path / "a.npz"), "-1")
    assert clean.returncode == 0, clean.stderr
    failed = ddprun("-n", "2", "--max-restarts", "2", str(script), str(tmp_path / "b.ckpt"),
                    str(tmp_path / "b.npz"), "3")
    assert failed.returncode == 0, failed.stderr
    assert "[rank 1] RuntimeError: rank 1 fails on purpose at step 3" in failed.stderr
    assert failed.stderr.count("restart 1 of 2") == 1 and "restart 2 of 2" not in failed.stderr
    uninterrupted, resumed = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert int(uninterrupted["resumed_from"]) == 0 and int(uninterrupted["restart"]) == 0
    assert int(resumed["resumed_from"]) == 3  # it went on from the checkpoint, not from scratch
    assert int(resumed["restart"]) == 1 and int(resumed["torchelastic"]) == 1
    np.testing.assert_array_equal(resumed["params"], uninterrupted["params"])


@needs_mpi
def test_restarts_stop_after_max_restarts(tmp_path):
    script = tmp_path / "always_fails.py"
    tries = tmp_path / "tries"
    script.write_text(f"import os\nopen({str(tries)!r}, 'a').write(os.environ['DDPGRAD_RESTART_COUNT'] + ',')\n"
                      "raise SystemExit(2)\n")
    out = ddprun("-n", "1", "--max-restarts", "2", str(script))
    assert out.returncode == 2
    assert tries.read_text() == "0,1,2,"
    assert "restart 2 of 2" in out.stderr


def test_start_up_has_a_deadline(tmp_path):
    fake = _fake_mpiexec(tmp_path, "HYDRA", body="exec sleep 60")  # a launcher whose ranks never start
    start = time.monotonic()
    out = ddprun("--mpiexec", fake, "-n", "2", "--start-timeout", "1", "examples/quickstart.py")
    took = time.monotonic() - start
    assert out.returncode == 124, out.stderr
    assert "only 0 of 2 ranks started within 1 s (missing: rank 0, 1)" in out.stderr
    assert took < 20, f"the job was not stopped at its deadline: {took:.1f} s"


SPINNING = textwrap.dedent("""
    import os, time
    import ddpgrad as torch
    import ddpgrad.distributed as dist

    dist.init_process_group()
    print("ready", os.getpid(), flush=True)
    while True:
        dist.all_reduce(torch.ones(2))
        time.sleep(0.02)
""")


@needs_mpi
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_ends_the_job_with_one_line_and_exit_130(tmp_path, sig):
    """Ctrl-C (SIGINT to the terminal's process group) or SIGTERM (scancel, kill) stops every
    rank, says so in one line, exits 130, and is not taken for a failure to restart after."""
    script = tmp_path / "spinning.py"
    script.write_text(SPINNING)
    # its own process group, like a shell job: the terminal's SIGINT goes to the whole group
    proc = subprocess.Popen([sys.executable, "-m", "ddpgrad.launch", "-n", "2", "--max-restarts", "2", str(script)], cwd=ROOT,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        pids = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(pids) < 2 and time.monotonic() < deadline:
            match = re.search(r"ready (\d+)", proc.stdout.readline())
            if match:
                pids.append(int(match.group(1)))
        assert len(pids) == 2
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert [line for line in err.splitlines()[1:]] == ["ddprun: interrupted: stopped all 2 rank(s)"], err
    for pid in pids:  # no rank is left running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
