"""Collectives on the threads and local backends: exact values, in place, order, errors, deadlines."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from ddpgrad.distributed.comm import (
    CollectiveMismatch,
    CollectiveTimeout,
    LocalCommunicator,
    RankFailed,
    current_thread_communicator,
    launch_threads,
    launcher_world_size,
    local_rank,
    make_communicator,
    resolve_timeout,
)

OPS = ("sum", "max", "min", "prod")
DTYPES = (np.float32, np.float64, np.int32, np.int64, np.float16, np.uint16)
SIZES = (0, 1, 7)
LARGE = 3_000_001
from comm_cases import expected, rank_values  # noqa: E402


def run(fn, world_size, timeout=10.0):
    return launch_threads(fn, world_size, timeout=timeout)


def comm():
    return current_thread_communicator()


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_allreduce_gives_exact_result_in_place_on_every_rank(op, dtype, world_size):
    def body():
        out = {}
        for n in SIZES:
            buf = rank_values(comm().rank, n, dtype).astype(dtype)
            address = buf.__array_interface__["data"][0]
            returned = comm().allreduce(buf, op)
            assert returned is buf and buf.__array_interface__["data"][0] == address
            out[n] = buf
        return out

    for out in run(body, world_size):
        for n in SIZES:
            assert out[n].dtype == np.dtype(dtype)
            np.testing.assert_array_equal(out[n].astype(np.int64), expected(op, world_size, n, dtype))


def test_allreduce_large_buffer():
    dtype = np.float32

    def body():
        buf = rank_values(comm().rank, LARGE, dtype).astype(dtype)
        comm().allreduce(buf, "sum")
        return buf

    results = run(body, 4)
    np.testing.assert_array_equal(results[0].astype(np.int64), expected("sum", 4, LARGE, dtype))
    for other in results[1:]:
        assert other.tobytes() == results[0].tobytes()


def test_float_sum_is_bitwise_identical_across_ranks():
    def body():
        buf = np.random.default_rng(comm().rank).standard_normal(1001)
        return comm().allreduce(buf)

    results = run(body, 4)
    reference = sum(np.random.default_rng(r).standard_normal(1001) for r in range(4))  # rank order
    assert all(r.tobytes() == reference.tobytes() for r in results)


def test_float16_sum_accumulates_in_float32_and_rounds_once():
    def body():
        # 2048 + 1 + 1 + 1: float16 steps (spacing 2 above 2048) would stay at 2048.
        return comm().allreduce(np.array([2048.0 if comm().rank == 0 else 1.0], np.float16))

    for buf in run(body, 4):
        assert buf[0] == np.float16(2051.0) == 2052.0


def test_nonblocking_allreduces_match_by_call_order_and_wait_in_any_order():
    def body():
        rank = comm().rank
        bufs = [np.full(n, rank + 10 * i, dtype=np.int64) for i, n in enumerate((3, 5, 7))]
        works = [comm().iallreduce(buf) for buf in bufs]
        if rank == 0:
            while not works[1].test():
                time.sleep(0.001)
        for work in reversed(works):
            work.wait()
        return bufs

    for bufs in run(body, 3):
        for i, (buf, n) in enumerate(zip(bufs, (3, 5, 7))):
            np.testing.assert_array_equal(buf, np.full(n, (0 + 1 + 2) + 3 * 10 * i))


def test_work_describe_appears_in_timeout_message():
    def body():
        if comm().rank == 1:
            work = comm().iallreduce(np.zeros(4, np.float32))
            work.describe = "allreduce of bucket 3 at step 17"
            work.wait(timeout=0.1)
        else:
            time.sleep(0.5)  # alive but late: a timeout, not a rank that left

    with pytest.raises(RankFailed) as info:
        run(body, 2)
    assert "allreduce of bucket 3 at step 17" in str(info.value.__cause__)


@pytest.mark.parametrize("root", [0, 1, 2])
def test_broadcast_copies_root_buffer_in_place(root):
    def body():
        buf = rank_values(comm().rank, 7, np.float64).astype(np.float64)
        empty = np.empty(0, np.int32)
        assert comm().broadcast(buf, root) is buf
        comm().broadcast(empty, root)
        return buf

    for buf in run(body, 3):
        np.testing.assert_array_equal(buf, rank_values(root, 7, np.float64))


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (2, 3)])
def test_allgather_stacks_every_rank_in_rank_order(shape):
    def body():
        sendbuf = np.full(shape, comm().rank, dtype=np.int32)
        return sendbuf, comm().allgather(sendbuf)

    results = run(body, 3)
    for sendbuf, gathered in results:
        assert gathered.shape == (3, *shape) and gathered.dtype == np.int32
        for r in range(3):
            np.testing.assert_array_equal(gathered[r], np.full(shape, r))
        assert not np.shares_memory(gathered, sendbuf)
    assert not np.shares_memory(results[0][1], results[1][1])


def test_objects_are_gathered_and_broadcast():
    def body():
        rank = comm().rank
        gathered = comm().allgather_object({"rank": rank, "name": "x" * rank})
        broadcast = comm().broadcast_object({"from": 2, "shape": (3, 4)} if rank == 2 else None, root=2)
        return gathered, broadcast

    for gathered, broadcast in run(body, 3):
        assert gathered == [{"rank": r, "name": "x" * r} for r in range(3)]
        assert broadcast == {"from": 2, "shape": (3, 4)}


def test_barrier_releases_no_rank_before_all_arrive():
    arrived = [False] * 3

    def body():
        rank = comm().rank
        if rank == 0:
            time.sleep(0.05)
        arrived[rank] = True
        comm().barrier()
        return list(arrived)

    assert run(body, 3) == [[True] * 3] * 3


def test_mismatched_shapes_raise_on_every_rank_naming_both_shapes():
    def body():
        try:
            comm().allreduce(np.zeros(3 + comm().rank, np.float32))
        except CollectiveMismatch as exc:
            return str(exc)
        return None

    messages = run(body, 2)
    for message in messages:
        assert message is not None and "(3,)" in message and "(4,)" in message


def test_mismatched_collective_kinds_raise():
    def body():
        if comm().rank == 0:
            comm().broadcast(np.zeros(2))
        else:
            comm().allreduce(np.zeros(2))

    with pytest.raises(RankFailed) as info:
        run(body, 2)
    assert isinstance(info.value.__cause__, CollectiveMismatch)
    assert "broadcast" in str(info.value.__cause__) and "allreduce" in str(info.value.__cause__)


def test_a_rank_raising_fails_launch_promptly_without_hanging_the_others():
    def body():
        if comm().rank == 1:
            time.sleep(0.05)  # the others are waiting in the allreduce by now
            raise ValueError("deliberate failure on rank 1")
        comm().allreduce(np.zeros(5))
        comm().barrier()

    start = time.monotonic()
    with pytest.raises(RankFailed, match="rank 1 of 3") as info:
        launch_threads(body, 3, timeout=30)
    assert time.monotonic() - start < 2.0
    assert isinstance(info.value.__cause__, ValueError)


def test_a_rank_late_for_a_collective_times_out_with_an_actionable_message():
    def body():
        if comm().rank == 1:
            comm().allreduce(np.zeros(5, np.float32))
        else:
            time.sleep(1.0)  # busy elsewhere, still alive

    start = time.monotonic()
    with pytest.raises(RankFailed, match="rank 1 of 2") as info:
        launch_threads(body, 2, timeout=0.5)
    elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 2.5
    exc = info.value.__cause__
    assert isinstance(exc, CollectiveTimeout)
    for text in ("rank 1 of 2", "allreduce", "same order", "DDPGRAD_TIMEOUT", "0.5 s"):
        assert text in str(exc)


@pytest.mark.parametrize("already_waiting", [False, True], ids=["returns_first", "returns_while_others_wait"])
def test_a_rank_returning_early_fails_the_waiting_ranks_at_once(already_waiting):
    seen = {}

    def body():
        rank = comm().rank
        comm().allreduce(np.ones(2))
        if rank == 1:
            if already_waiting:
                time.sleep(0.2)
            return "left"
        if not already_waiting:
            time.sleep(0.2)
        try:
            comm().allreduce(np.ones(3))
        except RankFailed as exc:
            seen[rank] = exc
            raise

    start = time.monotonic()
    with pytest.raises(RankFailed, match="rank 1 of 3 returned after 1 collective") as info:
        launch_threads(body, 3, timeout=60)
    assert time.monotonic() - start < 2.0  # not the 60 s deadline
    assert info.value.rank == 1
    assert sorted(seen) == [0, 2]
    for rank, exc in seen.items():
        assert exc.rank == 1 and f"rank {rank}: allreduce #1" in str(exc), exc


def test_a_rank_raising_gives_the_waiting_ranks_rank_failed_naming_it():
    seen = {}

    def body():
        if comm().rank == 2:
            time.sleep(0.1)
            raise KeyError("deliberate")
        try:
            comm().barrier()
        except RankFailed as exc:
            seen[comm().rank] = exc

    with pytest.raises(RankFailed, match="rank 2 of 3 raised KeyError"):
        launch_threads(body, 3, timeout=60)
    assert sorted(seen) == [0, 1]
    assert all(exc.rank == 2 and "barrier" in str(exc) for exc in seen.values())


def test_ranks_returning_at_different_times_after_the_same_calls_are_fine():
    def body():
        rank = comm().rank
        work = comm().iallreduce(np.full(3, float(rank)))
        if rank == 0:
            return "started, never waited"  # it joined call #0, so the others can finish it
        time.sleep(0.1 * rank)
        return work.wait().tolist()

    assert launch_threads(body, 3, timeout=10) == ["started, never waited", [3.0] * 3, [3.0] * 3]


BYTE_DTYPES = (np.bool_, np.int8, np.int16, np.uint32, np.complex128, np.dtype("datetime64[s]"),
               np.dtype([("a", np.int8), ("b", np.float32)]))


@pytest.mark.parametrize("dtype", BYTE_DTYPES, ids=lambda d: np.dtype(d).name)
def test_broadcast_and_allgather_move_any_dtype_by_its_bytes(dtype):
    def values(rank):
        raw = np.arange(7, dtype=np.uint8) * 37 + rank  # the bytes of 7 elements differ per rank
        return np.resize(raw, 7 * np.dtype(dtype).itemsize).view(dtype)

    def body():
        rank = comm().rank
        buf = values(rank).copy()
        comm().broadcast(buf, root=1)
        return buf, comm().allgather(values(rank))

    for buf, gathered in run(body, 3):
        assert buf.dtype == np.dtype(dtype) and buf.tobytes() == values(1).tobytes()
        assert gathered.shape == (3, 7)
        for rank in range(3):
            assert gathered[rank].tobytes() == values(rank).tobytes()


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.complex64])
def test_allreduce_refuses_dtypes_it_can_not_reduce(dtype):
    with pytest.raises(TypeError, match=f"allreduce does not support dtype {np.dtype(dtype)}"):
        LocalCommunicator().allreduce(np.zeros(2, dtype))


def test_object_arrays_are_refused_by_every_collective():
    buf = np.array([1, "x"], dtype=object)
    for call in (LocalCommunicator().broadcast, LocalCommunicator().allgather):
        with pytest.raises(TypeError, match="Python objects"):
            call(buf)


# ---------------------------------------------------------------------------------------------
# Fingerprints (the DDPGRAD_DEBUG=1 check on MPI, and the reducer's per-step check).


def test_equal_fingerprints_agree_and_any_difference_is_named():
    from ddpgrad.distributed.comm.base import fingerprint_mismatch, pack_fingerprint

    same = [pack_fingerprint("allreduce", 5, np.float32, 7, "sum") for _ in range(4)]
    assert fingerprint_mismatch(same) is None
    cases = {
        "count": (pack_fingerprint("allreduce", 3, np.float32, 7, "sum"), "rank 0 called #7 allreduce(sum) of 3 x float32"),
        "dtype": (pack_fingerprint("allreduce", 5, np.float64, 7, "sum"), "rank 0 called #7 allreduce(sum) of 5 x float64"),
        "kind": (pack_fingerprint("broadcast", 5, np.float32, 7, 2), "rank 0 called #7 broadcast(root=2) of 5 x float32"),
        "op": (pack_fingerprint("allreduce", 5, np.float32, 7, "max"), "rank 0 called #7 allreduce(max)"),
        "sequence": (pack_fingerprint("allreduce", 5, np.float32, 8, "sum"), "rank 0 called #8 allreduce(sum)"),
        "barrier": (pack_fingerprint("barrier", 0, np.uint8, 7), "rank 0 called #7 barrier;"),
    }
    for name, (odd, text) in cases.items():
        message = fingerprint_mismatch([odd, *same[1:]])
        assert message is not None and text in message, (name, message)
        assert "ranks 1, 2, 3 called #7 allreduce(sum) of 5 x float32" in message, (name, message)


def test_dtype_codes_tell_every_dtype_apart():
    from ddpgrad.distributed.comm.base import dtype_code

    dtypes = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.float16, np.int32, np.uint32,
              np.float32, np.int64, np.uint64, np.float64, np.complex64, np.complex128]
    codes = [dtype_code(d) for d in dtypes]
    assert len(set(codes)) == len(codes)
    assert dtype_code(np.dtype("<f4")) == dtype_code(np.dtype(">f4").newbyteorder())  # kind and size only


def test_launch_returns_results_by_rank_and_passes_arguments():
    def body(scale, offset=0):
        assert make_communicator() is comm()
        return scale * comm().rank + offset

    assert launch_threads(body, 4, args=(10,), kwargs={"offset": 1}) == [1, 11, 21, 31]
    assert current_thread_communicator() is None


@pytest.mark.parametrize("bad", [np.zeros((3, 4))[:, 1], np.zeros(3, np.complex64), [1.0, 2.0]])
def test_unsupported_buffers_are_rejected_with_a_clear_error(bad):
    with pytest.raises((TypeError, ValueError), match="allreduce"):
        LocalCommunicator().allreduce(bad)


def test_unknown_op_is_rejected():
    with pytest.raises(ValueError, match="avg"):
        LocalCommunicator().allreduce(np.zeros(2), "avg")


# ---------------------------------------------------------------------------------------------
# The local backend and backend selection.


def test_local_collectives_are_identity():
    comm = LocalCommunicator()
    assert (comm.rank, comm.size) == (0, 1)
    for op in OPS:
        buf = np.array([1.5, -2.0], np.float32)
        assert comm.allreduce(buf, op) is buf
        np.testing.assert_array_equal(buf, [1.5, -2.0])
    buf = np.arange(3)
    gathered = comm.allgather(buf)
    assert gathered.shape == (1, 3) and not np.shares_memory(gathered, buf)
    assert comm.iallreduce(buf).test()
    assert comm.allgather_object({"a": 1}) == [{"a": 1}]
    assert comm.broadcast_object((1, "x")) == (1, "x")
    comm.barrier()


def test_local_backend_and_auto_selection_never_import_mpi4py():
    code = (
        "import sys, numpy as np\n"
        "from ddpgrad.distributed.comm import make_communicator\n"
        "c = make_communicator('auto'); c.allreduce(np.ones(2)); c.barrier()\n"
        "assert c.backend == 'local', c\n"
        "assert 'mpi4py' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI_", "OMPI_", "MV2_"))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_launcher_is_recognised_from_environment():
    assert launcher_world_size({}) == 1
    assert launcher_world_size({"PMI_SIZE": "4", "PMI_RANK": "2"}) == 4
    assert launcher_world_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert local_rank({}) == 0
    assert local_rank({"MPI_LOCALRANKID": "1"}) == 1
    assert local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": "3"}) == 3


def test_mpi_backend_without_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r'pip install "ddpgrad\[mpi\]"'):
        make_communicator("mpi")


def test_timeout_comes_from_argument_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("DDPGRAD_TIMEOUT", raising=False)
    assert resolve_timeout() == 600.0
    monkeypatch.setenv("DDPGRAD_TIMEOUT", "2.5")
    assert resolve_timeout() == 2.5 and LocalCommunicator().timeout == 2.5
    assert resolve_timeout(7) == 7.0
    monkeypatch.setenv("DDPGRAD_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="DDPGRAD_TIMEOUT"):
        resolve_timeout()
