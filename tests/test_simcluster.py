"""launch/simcluster.py: simulated nodes (network namespaces) and the MPI suite run across them.

The cluster tests need root (``make test`` on the CI machine runs as root) and skip with the
reason otherwise. ``make test-cluster`` runs this file under an outer deadline; ``test-unit``
leaves it out.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIMCLUSTER = ROOT / "launch" / "simcluster.py"
JOB_TIMEOUT_S = 120
"""Outer deadline of one MPI job on the cluster (the whole MPI suite on 4 ranks takes ~15 s)."""
MPI_SUITE = ["tests/mpi/test_ddp.py", "tests/mpi/test_collectives.py", "tests/mpi/test_comm_hooks_mpi.py"]
"""DDP equivalence, unused parameters, mismatched models, collective timeouts, 16-bit hooks."""
PYTEST_UNDER_MPI = [sys.executable, "-m", "mpi4py", "-m", "pytest", "--with-mpi", "-x", "-q", "-p",
                    "no:cacheprovider", "-o", "timeout_method=thread", "--timeout", "90"]


def _load_simcluster():
    spec = importlib.util.spec_from_file_location("simcluster", SIMCLUSTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sc = _load_simcluster()
REASON = sc.unavailable_reason()
needs_namespaces = pytest.mark.skipif(REASON is not None, reason=f"simulated cluster unavailable: {REASON}")


def _report(proc):
    return f"exit {proc.returncode}\n--- stdout:\n{proc.stdout[-6000:]}\n--- stderr:\n{proc.stderr[-6000:]}"


def _ours():
    return [ns for ns in sc._namespaces() if ns.startswith(f"{sc.PREFIX}-{os.getpid()}-")]


@pytest.fixture(scope="module", autouse=True)
def cleanup_on_sigterm():
    """An outer ``timeout`` sends SIGTERM: unwind (removing the namespaces) instead of dying."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def cluster():
    with sc.SimCluster(nodes=2) as c:
        yield c


@pytest.fixture
def job(tmp_path):
    """Write a Python job script; returns the command that runs it."""
    def make(source):
        path = tmp_path / "job.py"
        path.write_text(textwrap.dedent(source))
        return [sys.executable, str(path)]
    return make


# ------------------------------------------------------------------------------ no root needed
@pytest.mark.parametrize("rate,bits", [("1gbit", 1e9), ("10gbit", 1e10), ("500mbit", 5e8), ("2.5GBIT", 2.5e9),
                                       (None, None), ("unlimited", None)])
def test_rates_are_read_in_tc_units(rate, bits):
    assert sc.rate_bits_per_s(rate) == bits


@pytest.mark.parametrize("rate", ["1gb", "fast", "0gbit", "-1mbit", "1 gbit/s"])
def test_a_bad_rate_is_refused_naming_it(rate):
    with pytest.raises(ValueError, match=re.escape(repr(rate))):
        sc.rate_bits_per_s(rate)


@pytest.mark.parametrize("nodes", [0, -1, 251, 2.0])
def test_a_bad_node_count_is_refused_before_anything_is_made(nodes):
    with pytest.raises(ValueError, match="nodes must be an integer from 1 to 250"):
        sc.SimCluster(nodes)


def test_command_line_refuses_bad_requests_naming_the_bad_value():
    for args, message in ((["--nodes", "2"], "give the command every rank runs"),
                          (["--rate", "fast", "--", "true"], "rate must be like 10gbit, 500mbit or 'unlimited', got 'fast'"),
                          (["--nodes", "0", "--", "true"], "nodes must be an integer from 1 to 250, got 0"),
                          (["--ranks-per-node", "0", "--", "true"], "--ranks-per-node must be at least 1, got 0")):
        out = subprocess.run([sys.executable, str(SIMCLUSTER), *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and message in out.stderr, out.stderr


# ------------------------------------------------------------------------------ the network
@needs_namespaces
def test_each_node_has_its_own_hostname_and_ranks_on_one_node_share_it(job):
    cmd = job("""
        import socket
        from mpi4py import MPI
        w = MPI.COMM_WORLD
        local = w.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        print(f"rank {w.Get_rank()} host {socket.gethostname()} local {local}", flush=True)
    """)
    with sc.SimCluster(nodes=3) as c:  # three nodes: through the bridge in the switch namespace
        proc = c.run(cmd, ranks_per_node=2, timeout=JOB_TIMEOUT_S)
    assert proc.returncode == 0, _report(proc)
    found = sorted(re.findall(r"rank (\d) host (\S+) local (\d)", proc.stdout))
    assert found == [(str(r), f"simnode{r // 2}", "2") for r in range(6)], proc.stdout
    assert _ours() == [], "namespaces left behind"


def _tx_bytes(cluster, node):
    out = subprocess.run(cluster.node_command(node, ["cat", f"/sys/class/net/{sc.IFACE}/statistics/tx_bytes"]),
                         capture_output=True, text=True, timeout=30, check=True)
    return int(out.stdout)


ALLREDUCE_JOB = """
    import sys, time
    import numpy as np
    from mpi4py import MPI
    w = MPI.COMM_WORLD
    buf = np.ones(int(sys.argv[1]) // 4, np.float32)
    w.Barrier()
    t0 = time.perf_counter()
    w.Allreduce(MPI.IN_PLACE, buf)
    seconds = w.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    assert buf[0] == w.Get_size()
    if w.Get_rank() == 0:
        print(f"seconds {seconds}", flush=True)
"""


@needs_namespaces
def test_mpi_traffic_crosses_the_simulated_link_not_shared_memory(cluster, job):
    nbytes = 8_000_000
    before = [_tx_bytes(cluster, n) for n in range(2)]
    proc = cluster.run(job(ALLREDUCE_JOB) + [str(nbytes)], timeout=JOB_TIMEOUT_S)
    assert proc.returncode == 0, _report(proc)
    sent = [_tx_bytes(cluster, n) - b for n, b in zip(range(2), before)]
    # an allreduce of 2 ranks sends at least half the buffer each way, whatever the algorithm
    assert all(s >= nbytes / 2 for s in sent), f"bytes sent on {sc.IFACE} per node: {sent}"


@needs_namespaces
def test_a_rate_limit_holds_the_link_to_its_rate(cluster, job):
    nbytes, rate = 1_000_000, "40mbit"  # at least 0.5 MB each way: >= 0.1 s at 40 Mbit/s
    cluster.set_rate(rate)
    try:
        proc = cluster.run(job(ALLREDUCE_JOB) + [str(nbytes)], timeout=JOB_TIMEOUT_S)
    finally:
        cluster.set_rate(None)
    assert proc.returncode == 0, _report(proc)
    seconds = float(re.search(r"seconds (\S+)", proc.stdout).group(1))
    floor = nbytes / 2 * 8 / sc.rate_bits_per_s(rate)
    assert seconds >= 0.9 * floor, f"{nbytes} B allreduce took {seconds:.3f} s at {rate}, below {floor:.3f} s"
    unlimited = cluster.run(job(ALLREDUCE_JOB) + [str(nbytes)], timeout=JOB_TIMEOUT_S)
    assert float(re.search(r"seconds (\S+)", unlimited.stdout).group(1)) < seconds, _report(unlimited)


# ------------------------------------------------------------------------------ clean-up
@needs_namespaces
def test_everything_is_removed_after_an_exception_inside_the_cluster():
    with pytest.raises(KeyError):
        with sc.SimCluster(nodes=2) as c:
            made, tmpdir = list(c.namespaces), c.tmpdir
            assert set(made) <= set(sc._namespaces())
            raise KeyError("on purpose")
    assert not set(made) & set(sc._namespaces())
    assert not os.path.exists(tmpdir)


@needs_namespaces
def test_a_job_past_its_timeout_is_killed_on_every_node_and_reported(cluster, job):
    cmd = job("""
        import time
        from mpi4py import MPI
        print(f"rank {MPI.COMM_WORLD.Get_rank()} waiting", flush=True)
        time.sleep(120)
    """)
    start = time.monotonic()
    with pytest.raises(sc.ClusterJobFailed, match="did not finish in 5 s") as err:
        cluster.run(cmd, timeout=5)
    assert time.monotonic() - start < 5 + 3 * sc.KILL_GRACE_S
    assert "waiting" in err.value.stdout
    leftover = {ns: subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
                for ns in cluster.namespaces}
    assert all(not pids for pids in leftover.values()), leftover


@needs_namespaces
def test_namespaces_of_a_run_that_died_are_cleaned_up():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"{sc.PREFIX}-{dead.pid}-0-0"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in sc.cleanup_stale()
        assert stale not in sc._namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


@needs_namespaces
def test_command_line_runs_the_job_and_passes_its_exit_status_on(job):
    cmd = job("""
        import socket, sys
        from mpi4py import MPI
        sys.stdout.write("hello from " + socket.gethostname() + chr(10))  # one write: two ranks' lines can not interleave
        sys.stdout.flush()
        sys.exit(3 if MPI.COMM_WORLD.Get_rank() == 1 else 0)
    """)
    out = subprocess.run([sys.executable, str(SIMCLUSTER), "--nodes", "2", "--timeout", str(JOB_TIMEOUT_S), "--", *cmd],
                         capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 30)
    assert out.returncode == 3, _report(out)
    assert sorted(re.findall(r"hello from (\S+)", out.stdout)) == ["simnode0", "simnode1"], out.stdout
    assert "simnode0=10.231.0.1, simnode1=10.231.0.2" in out.stderr
    assert f"BLAS threads per rank {sc.blas_threads_per_rank(2)}" in out.stderr


# ------------------------------------------------------------------------------ the MPI suite
@needs_namespaces
@pytest.mark.parametrize("ranks_per_node", [1, 2], ids=["2x1", "2x2"])
def test_mpi_suite_passes_across_two_simulated_nodes(cluster, ranks_per_node):
    proc = cluster.run(PYTEST_UNDER_MPI + MPI_SUITE, ranks_per_node, timeout=JOB_TIMEOUT_S, cwd=ROOT,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, _report(proc)
    assert re.search(r"\d+ passed", proc.stdout), proc.stdout[-3000:]


HALF_BROKEN = """
    import sys, time
    import ddpgrad
    import ddpgrad.distributed as dist
    import ddpgrad.nn as nn
    from ddpgrad.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group()
    model = DDP(nn.Linear(4, 2))
    if dist.get_rank() == dist.get_world_size() - 1:  # a rank on the last node
        if sys.argv[1] == "raise":
            raise RuntimeError("the last rank broke")
        time.sleep(60)  # a rank that hangs
    for _ in range(1000):
        model(ddpgrad.randn(3, 4)).sum().backward()
"""


@needs_namespaces
@pytest.mark.parametrize("ranks_per_node", [1, 2], ids=["2x1", "2x2"])
@pytest.mark.parametrize("failure,expected", [
    ("raise", "] RuntimeError: the last rank broke"),
    ("hang", "did not complete after waiting 3.0 s"),
])
def test_a_broken_rank_on_another_node_ends_the_ddp_job_fast_with_a_report(cluster, job, ranks_per_node,
                                                                           failure, expected):
    last = 2 * ranks_per_node - 1
    start = time.monotonic()
    proc = cluster.run(job(HALF_BROKEN) + [failure], ranks_per_node, timeout=JOB_TIMEOUT_S,
                       env=dict(os.environ, DDPGRAD_TIMEOUT="3"))
    elapsed = time.monotonic() - start
    assert proc.returncode != 0 and elapsed < 30, f"{elapsed:.1f} s\n{_report(proc)}"
    assert expected in proc.stderr, _report(proc)
    if failure == "raise":
        assert f"[rank {last}] Traceback" in proc.stderr, _report(proc)
