"""Helpers for tests run under mpiexec: judge assertions on all ranks together, fail fast."""

import os
import sys

import pytest
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: ddp_cases

from ddpgrad.distributed.comm.mpi import MPICommunicator

TEST_COMM_TIMEOUT_S = 30.0
"""Below pytest-timeout's 60 s, so a rank stuck in a collective reports itself first."""

WORLD = MPI.COMM_WORLD


def assert_all_ranks(cond, msg=""):
    """Fail on every rank if ``cond`` is false on any rank, quoting each failing rank's ``msg``."""
    failures = WORLD.allgather(None if cond else str(msg))
    bad = {rank: text for rank, text in enumerate(failures) if text is not None}
    assert not bad, "failed on " + "; ".join(f"rank {rank}: {text}" for rank, text in bad.items())


@pytest.fixture(scope="session")
def comm():
    return MPICommunicator(timeout=TEST_COMM_TIMEOUT_S)


_session_failed = False


def pytest_sessionfinish(session, exitstatus):
    global _session_failed
    _session_failed = exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)


def pytest_unconfigure(config):
    # A test that failed on some ranks only (with -x) leaves the others waiting in a collective:
    # once this rank's report is printed, end the job rather than let them run into a timeout.
    if _session_failed and WORLD.Get_size() > 1:
        WORLD.Abort(1)
