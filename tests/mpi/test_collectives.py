"""Collectives on the MPI backend, for any number of ranks: exact values, in place, order, deadline,
and whole-job abort on an error or a timeout.

Run: mpiexec -n N python -m pytest --with-mpi -x tests/mpi/test_collectives.py, for N = 1..4.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from comm_cases import expected, rank_values
from conftest import WORLD, assert_all_ranks

from ddpgrad.distributed.comm import CollectiveMismatch, CollectiveTimeout
from ddpgrad.distributed.comm.mpi import MPICommunicator
from ddpgrad.distributed.comm.sum16 import float_to_bf16_bits

pytestmark = pytest.mark.mpi

OPS = ("sum", "max", "min", "prod")
DTYPES = (np.float32, np.float64, np.int32, np.int64, np.float16, np.uint16)
SIZES = (0, 1, 7, 3_000_001)
REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER_ENV_PREFIXES = ("PMI_", "PMIX_", "MPI_", "HYDRA_", "OMPI_", "MV2_", "DDPGRAD_")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_allreduce_gives_exact_result_in_place(comm, op, dtype):
    for n in SIZES:
        buf = rank_values(comm.rank, n, dtype).astype(dtype)
        address = buf.__array_interface__["data"][0]
        returned = comm.allreduce(buf, op)
        same_memory = returned is buf and buf.__array_interface__["data"][0] == address
        assert_all_ranks(same_memory and buf.dtype == np.dtype(dtype), f"n={n}: not in place")
        exact = np.array_equal(buf.astype(np.int64), expected(op, comm.size, n, dtype))
        assert_all_ranks(exact, f"n={n}: {op} of {np.dtype(dtype)} wrong: {buf[:6]}")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_float_sum_is_bitwise_identical_across_ranks(comm, dtype):
    buf = np.random.default_rng(comm.rank).standard_normal(1001).astype(dtype)
    comm.allreduce(buf)
    rows = comm.allgather(buf)
    assert_all_ranks(all(row.tobytes() == rows[0].tobytes() for row in rows), "ranks differ")


def test_float16_sum_accumulates_in_float32_and_rounds_once(comm):
    # 2048 + 1 + ... + 1: float16 steps (spacing 2 above 2048) would stay at 2048 from 3 ranks on.
    buf = comm.allreduce(np.array([2048.0 if comm.rank == 0 else 1.0], np.float16))
    assert_all_ranks(buf[0] == np.float16(2048.0 + comm.size - 1), f"got {buf[0]}")


def test_nonblocking_allreduces_match_by_call_order_and_wait_in_any_order(comm):
    bufs = [np.full(n, comm.rank + 10 * i, dtype=np.int64) for i, n in enumerate((3, 5, 7))]
    works = [comm.iallreduce(buf) for buf in bufs]
    deadline = time.monotonic() + comm.timeout
    while not works[1].test() and time.monotonic() < deadline:
        pass  # test() alone must drive the collective to completion
    for work in reversed(works):
        work.wait()
    rank_sum = comm.size * (comm.size - 1) // 2
    for i, (buf, n) in enumerate(zip(bufs, (3, 5, 7))):
        assert_all_ranks(np.array_equal(buf, np.full(n, rank_sum + comm.size * 10 * i)), f"buffer {i}: {buf}")


@pytest.mark.mpi(min_size=2)
def test_wait_times_out_with_an_actionable_message_then_can_still_complete(comm, monkeypatch):
    monkeypatch.setenv("DDPGRAD_NO_ABORT", "1")  # raise here instead of ending the job
    buf = np.ones(4, np.float32)
    message = ""
    if comm.rank == 0:
        work = comm.iallreduce(buf)
        work.describe = "allreduce of bucket 3 at step 17"
        try:
            work.wait(timeout=0.2)
        except CollectiveTimeout as exc:
            message = str(exc)
        work.wait()
    else:
        time.sleep(0.6)  # joins late: rank 0 gives up waiting first
        comm.allreduce(buf)
    wanted = ("rank 0 of", "allreduce of bucket 3 at step 17", "same order", "DDPGRAD_TIMEOUT")
    assert_all_ranks(comm.rank != 0 or all(text in message for text in wanted), f"message: {message!r}")
    assert_all_ranks(np.array_equal(buf, np.full(4, comm.size)), f"late allreduce gave {buf}")


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32], ids=lambda d: np.dtype(d).name)
def test_broadcast_copies_root_buffer_in_place(comm, dtype):
    for root in range(comm.size):
        for n in (0, 1, 7):
            buf = rank_values(comm.rank, n, dtype).astype(dtype)
            returned = comm.broadcast(buf, root)
            ok = returned is buf and np.array_equal(buf, rank_values(root, n, dtype))
            assert_all_ranks(ok, f"root {root}, n={n}: got {buf}")


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float16, np.int64], ids=lambda d: np.dtype(d).name)
def test_allgather_stacks_every_rank_in_rank_order(comm, shape, dtype):
    sendbuf = np.full(shape, comm.rank, dtype=dtype)
    sendbuf.flags.writeable = False  # allgather only reads it
    gathered = comm.allgather(sendbuf)
    want = np.stack([np.full(shape, r, dtype=dtype) for r in range(comm.size)])
    ok = gathered.shape == want.shape and gathered.dtype == want.dtype and np.array_equal(gathered, want)
    assert_all_ranks(ok, f"got {gathered!r}")


BYTE_DTYPES = (np.bool_, np.int8, np.uint32, np.complex128, np.dtype([("a", np.int8), ("b", np.float32)]))


def _bytes_of(rank, n, dtype):
    raw = (np.arange(n * np.dtype(dtype).itemsize) * 37 + rank).astype(np.uint8)
    return raw.view(dtype)


@pytest.mark.parametrize("dtype", BYTE_DTYPES, ids=lambda d: np.dtype(d).name)
def test_broadcast_and_allgather_move_any_dtype_by_its_bytes(comm, dtype):
    root = comm.size - 1
    buf = _bytes_of(comm.rank, 7, dtype).copy()
    comm.broadcast(buf, root)
    gathered = comm.allgather(_bytes_of(comm.rank, 7, dtype))
    ok = buf.dtype == np.dtype(dtype) and buf.tobytes() == _bytes_of(root, 7, dtype).tobytes()
    ok = ok and gathered.shape == (comm.size, 7) and gathered.dtype == np.dtype(dtype)
    ok = ok and all(gathered[r].tobytes() == _bytes_of(r, 7, dtype).tobytes() for r in range(comm.size))
    assert_all_ranks(ok, f"broadcast gave {buf!r}, allgather {gathered!r}")


def test_fingerprints_are_off_by_default(comm):
    assert_all_ranks(not comm._fingerprints, "fingerprints on without DDPGRAD_DEBUG")


MISMATCHES = {
    "count": (lambda rank: np.ones(3 if rank == 0 else 5, np.float32), "rank 0 called #{seq} allreduce(sum) of 3 x float32",
              "called #{seq} allreduce(sum) of 5 x float32"),
    "dtype": (lambda rank: np.ones(4, np.float32 if rank == 0 else np.float64), "rank 0 called #{seq} allreduce(sum) of 4 x float32",
              "called #{seq} allreduce(sum) of 4 x float64"),
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(MISMATCHES))
def test_debug_fingerprints_name_collectives_out_of_step(monkeypatch, case):
    monkeypatch.setenv("DDPGRAD_DEBUG", "1")
    debug = MPICommunicator(timeout=30)
    make, mine, theirs = MISMATCHES[case]
    debug.barrier()
    seq = debug.calls
    message = ""
    try:
        debug.allreduce(make(debug.rank))
    except CollectiveMismatch as exc:
        message = str(exc)
    others = "rank 1" if debug.size == 2 else "ranks " + ", ".join(map(str, range(1, debug.size)))
    for text in (mine.format(seq=seq), f"{others} {theirs.format(seq=seq)}", f"rank {debug.rank} of {debug.size}"):
        assert_all_ranks(text in message, f"{text!r} not in {message!r}")
    buf = debug.allreduce(np.ones(2))  # nothing was mixed: the next matching call works
    assert_all_ranks(np.array_equal(buf, np.full(2, debug.size)), f"then got {buf}")


def test_objects_are_gathered_and_broadcast(comm):
    gathered = comm.allgather_object({"rank": comm.rank, "name": "x" * comm.rank})
    assert_all_ranks(gathered == [{"rank": r, "name": "x" * r} for r in range(comm.size)], f"{gathered}")
    root = comm.size - 1
    sent = {"from": root, "shape": (3, 4)} if comm.rank == root else None
    received = comm.broadcast_object(sent, root=root)
    assert_all_ranks(received == {"from": root, "shape": (3, 4)}, f"{received}")


def test_barrier_releases_no_rank_before_all_arrive(comm):
    late_by = 0.3
    comm.barrier()
    if comm.rank == 0:
        time.sleep(late_by)
    start = time.monotonic()
    comm.barrier()
    waited = time.monotonic() - start
    assert_all_ranks(comm.rank == 0 or waited > late_by / 2, f"left the barrier after {waited:.3f} s")


# ---------------------------------------------------------------------------------------------
# Whole-job behaviour: launched as separate jobs, from the N=1 run only (no nested launches).

only_in_single_rank_run = pytest.mark.skipif(
    WORLD.Get_size() > 1, reason="launches its own mpiexec; runs in the mpiexec -n 1 pass"
)

RAISE_ON_RANK_2 = """
import threading
import numpy as np
from ddpgrad.distributed.comm.mpi import MPICommunicator, install_abort_on_exception
assert install_abort_on_exception() and install_abort_on_exception()
comm = MPICommunicator()

def fail():
    raise ValueError("deliberate failure on rank 2")

if comm.rank == 2 and IN_THREAD:
    worker = threading.Thread(target=fail)
    worker.start()
    worker.join()
elif comm.rank == 2:
    fail()
comm.allreduce(np.ones(3))  # the other ranks wait here until the job is aborted
"""

RANK_1_NEVER_JOINS = """
import time
import numpy as np
from ddpgrad.distributed.comm.mpi import MPICommunicator
from ddpgrad.distributed.comm.sum16 import float_to_bf16_bits
comm = MPICommunicator()
if comm.rank == 1:
    time.sleep(60)
comm.allreduce(np.ones(3), describe="allreduce of bucket 0 at step 5")
"""


def run_job(tmp_path, script, ranks, **env):
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    assert mpiexec, "mpiexec not found next to the Python executable or on PATH"
    path = tmp_path / "job.py"
    path.write_text(script)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_ENV_PREFIXES)}
    clean.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), **env)
    start = time.monotonic()
    result = subprocess.run(
        [mpiexec, "-n", str(ranks), sys.executable, str(path)],
        env=clean, capture_output=True, text=True, timeout=60,
    )
    return result, time.monotonic() - start


@only_in_single_rank_run
@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "other-thread"])
def test_an_exception_on_one_rank_aborts_the_whole_job_with_its_traceback(tmp_path, in_thread):
    script = f"IN_THREAD = {in_thread}\n" + RAISE_ON_RANK_2
    result, elapsed = run_job(tmp_path, script, ranks=4, DDPGRAD_TIMEOUT="60")
    assert result.returncode != 0 and elapsed < 20, (result.returncode, elapsed, result.stderr)
    assert "[rank 2] Traceback (most recent call last):" in result.stderr, result.stderr
    assert "[rank 2] ValueError: deliberate failure on rank 2" in result.stderr, result.stderr


@only_in_single_rank_run
def test_a_rank_that_never_joins_makes_the_others_time_out_and_abort(tmp_path):
    result, elapsed = run_job(tmp_path, RANK_1_NEVER_JOINS, ranks=3, DDPGRAD_TIMEOUT="2")
    assert result.returncode != 0 and elapsed < 15, (result.returncode, elapsed, result.stderr)
    for text in ("did not complete after waiting 2.0 s", "allreduce of bucket 0 at step 5", "DDPGRAD_TIMEOUT"):
        assert text in result.stderr, result.stderr
    assert "[rank 0] " in result.stderr or "[rank 2] " in result.stderr, result.stderr


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("op", ["sum", "sum_bf16"])
def test_progress_thread_completes_collectives_without_the_main_thread_testing(monkeypatch, op):
    monkeypatch.setenv("DDPGRAD_PROGRESS_THREAD", "1")
    comm = MPICommunicator(timeout=60)
    assert comm.progress_thread is not None
    buf = np.full(200_003, 1.0, np.float32) if op == "sum" else np.full(200_003, 0x3F80, np.uint16)
    work = comm.iallreduce(buf, op)
    deadline = time.monotonic() + 20
    while not work.done and time.monotonic() < deadline:
        time.sleep(0.01)  # never test() here: only the progress thread can complete it
    done = work.done
    work.wait()
    comm.progress_thread.stop()
    assert_all_ranks(done, "the progress thread did not complete the collective on its own")
    expected = comm.size if op == "sum" else int(float_to_bf16_bits(np.array([comm.size], np.float32))[0])
    assert_all_ranks(bool(np.all(buf == expected)), f"{op}: {buf[:3]} != {expected}")
