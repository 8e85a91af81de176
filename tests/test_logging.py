"""Logs fit for a cluster: the ``ddpgrad`` logger (rank 0 by default, rank-prefixed), ``log_once``,
and progress bars drawn on a terminal only."""

from __future__ import annotations

import fcntl
import logging
import os
import select
import struct
import subprocess
import sys
import termios
import textwrap

import pytest
from launch_helpers import ROOT, clean_env, python

import ddpgrad.distributed as dist
from ddpgrad.utils import logging as dlog
from ddpgrad.utils.progress import progress, terminal_columns

LOG_SCRIPT = textwrap.dedent("""
    from ddpgrad.utils.logging import ALL_RANKS, get_logger, log_once
    log = get_logger("train")
    log.info("epoch %d done", 1)
    log.debug("details")
    log.warning("two\\nlines")
    log.error("from every rank", extra=ALL_RANKS)
    for _ in range(3):
        log_once(log, "said once")
""")


def _log_lines(**env):
    out = python(LOG_SCRIPT, **env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""  # logs go to stderr, never into the program's output
    return out.stderr.splitlines()


def test_rank_0_logs_with_its_prefix_and_levels_named_from_warnings_up():
    assert _log_lines(RANK="0", WORLD_SIZE="1") == [
        "[rank 0] epoch 1 done", "[rank 0] WARNING: two", "[rank 0] WARNING: lines",
        "[rank 0] ERROR: from every rank", "[rank 0] said once"]


def test_other_ranks_are_quiet_except_for_records_meant_for_all():
    assert _log_lines(PMI_RANK="3", PMI_SIZE="1") == ["[rank 3] ERROR: from every rank"]


def test_environment_sets_level_and_ranks():
    lines = _log_lines(PMI_RANK="2", PMI_SIZE="1", DDPGRAD_LOG_RANKS="all", DDPGRAD_LOG_LEVEL="debug")
    assert lines[:2] == ["[rank 2] epoch 1 done", "[rank 2] details"]
    out = python(LOG_SCRIPT, DDPGRAD_LOG_RANKS="some")
    assert out.returncode != 0 and "DDPGRAD_LOG_RANKS='some'" in out.stderr


def test_log_once_logs_the_first_call_only(capsys):
    log = dlog.get_logger("test_log_once")
    assert dlog.log_once(log, "hello %s", "x", level=logging.WARNING) is True
    assert dlog.log_once(log, "hello %s", "x", level=logging.WARNING) is False
    assert capsys.readouterr().err.splitlines() == ["[rank 0] WARNING: hello x"]


def test_thread_ranks_are_filtered_by_their_own_rank(capsys):
    log = dlog.get_logger("threads")

    def body():
        dist.init_process_group("threads")
        log.info("rank %d speaks", dist.get_rank())
        log.info("everyone: %d", dist.get_rank(), extra=dlog.ALL_RANKS)

    dist.launch_threads(body, 3)
    lines = capsys.readouterr().err.splitlines()
    assert lines.count("[rank 0] rank 0 speaks") == 1 and not any("rank 1 speaks" in line for line in lines)
    assert sorted(line for line in lines if "everyone" in line) == [f"[rank {r}] everyone: {r}" for r in range(3)]


def test_an_application_that_configures_ddpgrad_logging_keeps_its_handlers():
    code = ("import logging, sys\n"
            "logging.getLogger('ddpgrad').addHandler(logging.StreamHandler(sys.stdout))\n"
            "logging.getLogger('ddpgrad').setLevel(logging.INFO)\n"
            "from ddpgrad.utils.logging import get_logger\nget_logger('x').info('plain')\n")
    out = python(code)
    assert out.stdout == "plain\n" and out.stderr == ""


def test_unknown_level_is_refused_clearly():
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        dlog._level("loud")


# -- progress ----------------------------------------------------------------------------------

def test_no_bar_in_a_pipe_or_file(monkeypatch):
    monkeypatch.delenv("DDPGRAD_TERMINAL_COLUMNS", raising=False)
    items = [1, 2, 3]
    assert terminal_columns() is None  # pytest captures stderr: not a terminal
    assert progress(items, desc="epoch 1") is items


def test_under_ddprun_the_bar_takes_ddpruns_terminal_width(monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setenv("DDPGRAD_TERMINAL_COLUMNS", "71")
    bar = progress(range(3), desc="epoch 1")
    assert bar is not None and getattr(bar, "ncols", None) == 71
    assert list(bar) == [0, 1, 2]
    items = [1]
    assert progress(items, enabled=False) is items


def test_a_terminal_gets_a_bar():
    pytest.importorskip("tqdm")
    code = ("from ddpgrad.utils.progress import progress\n"
            "bar = progress(range(50), total=50, desc='epoch 1', mininterval=0, leave=True)\n"
            "print(type(bar).__name__, flush=True)\n"
            "for _ in bar:\n    pass\n")
    main, side = os.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=side)
    os.close(side)
    drawn = b""
    try:
        while b"50/50" not in drawn:
            ready, _, _ = select.select([main], [], [], 30)
            if not ready:
                break
            try:
                drawn += os.read(main, 65536)
            except OSError:  # the program ended and closed the terminal
                break
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    assert out.decode().strip() == "tqdm"
    assert b"epoch 1" in drawn and b"50/50" in drawn, drawn
