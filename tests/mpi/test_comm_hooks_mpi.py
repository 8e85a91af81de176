"""The 16-bit sums ("sum_fp16", "sum_bf16") and the compression hooks under mpiexec, for any number
of ranks: exact values, the MPI op's arithmetic bitwise equal to the threads backend's, replicas
that stay identical.

Run: mpiexec -n N python -m pytest --with-mpi -x tests/mpi/test_comm_hooks_mpi.py, for N = 1..4.
"""

import hashlib

import numpy as np
import pytest
from conftest import WORLD, assert_all_ranks

import ddpgrad.distributed as dist
import test_comm_hooks as cases
from ddpgrad.distributed import launch_threads
from ddpgrad.distributed.comm import current_thread_communicator
from ddpgrad.distributed.comm import mpi as mpi_backend
from ddpgrad.distributed.comm.sum16 import PAIRWISE_SUMS, sum_rows_16

pytestmark = pytest.mark.mpi
OPS = ("sum_fp16", "sum_bf16")


@pytest.fixture(scope="module", autouse=True)
def process_group():
    if not dist.is_initialized():
        dist.init_process_group("mpi" if WORLD.Get_size() > 1 else "auto", timeout=60)
    yield


def random_inputs(n, op):
    """Every rank's random 16-bit buffer (finite, wide range of magnitudes), the same on all ranks."""
    dtype = PAIRWISE_SUMS[op][0]
    return [cases.encode(np.random.default_rng(r).standard_normal(n) * 10.0 ** (r % 3), op).view(dtype)
            for r in range(WORLD.Get_size())]


def bits_digest(array):
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=8).hexdigest()


@pytest.mark.parametrize("op", OPS)
def test_16bit_allreduce_is_exact_on_small_integers_in_place(comm, op):
    for n in (0, 1, 7, 1_000_003):
        buf = cases.encode(cases.rank_values(comm.rank, n), op)
        address = buf.__array_interface__["data"][0]
        returned = comm.allreduce(buf, op)
        in_place = returned is buf and buf.__array_interface__["data"][0] == address
        assert_all_ranks(in_place and buf.dtype == PAIRWISE_SUMS[op][0], f"n={n}: not in place")
        expected = sum(cases.rank_values(r, n) for r in range(comm.size))
        exact = np.array_equal(cases.decode(buf, op), expected)
        assert_all_ranks(exact, f"n={n}: {op} wrong: {cases.decode(buf[:6], op)} != {expected[:6]}")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("op", OPS)
def test_16bit_allreduce_sends_16_bit_chunks_and_sums_them_in_numpy(comm, op, monkeypatch):
    seen = []

    def watched(rows, name, out):
        seen.append((rows.dtype, rows.shape, out.size))
        return sum_rows_16(rows, name, out)

    monkeypatch.setattr(mpi_backend, "sum_rows_16", watched)
    n = 100_003
    comm.allreduce(cases.encode(cases.rank_values(comm.rank, n), op), op)
    chunk = -(-n // comm.size)
    expected = [(np.dtype(np.uint16), (comm.size, chunk), chunk)]
    assert_all_ranks(seen == expected, f"each rank sums its 16-bit chunk once: {seen} != {expected}")


@pytest.mark.parametrize("op", OPS)
def test_16bit_allreduce_agrees_bitwise_with_the_threads_backend(comm, op):
    inputs = random_inputs(20_001, op)
    buf = inputs[comm.rank].copy()
    comm.allreduce(buf, op)

    def threads_rank():
        thread_comm = current_thread_communicator()
        return thread_comm.allreduce(inputs[thread_comm.rank].copy(), op)

    threads = launch_threads(threads_rank, comm.size, timeout=30)[0]
    digests = WORLD.allgather(bits_digest(buf))
    assert_all_ranks(len(set(digests)) == 1, f"ranks got different bits: {digests}")
    same = np.array_equal(buf.view(np.uint16), threads.view(np.uint16))
    assert_all_ranks(same, f"{op} on {comm.size} ranks: MPI and threads backends differ")


@pytest.mark.parametrize("kind", ["fp16", "bf16"])
def test_compression_hooks_keep_replicas_identical_and_close_to_uncompressed(kind):
    hook = cases.HOOKS[kind]
    reference = cases.train(None)
    got = cases.train(hook)
    digests = WORLD.allgather(bits_digest(got["params"]))
    assert_all_ranks(len(set(digests)) == 1, f"replicas diverged: {digests}")
    grad = got["grad"]
    if kind == "fp16":
        sixteen_bit = np.array_equal(grad.astype(np.float16).astype(np.float32), grad)
    else:
        sixteen_bit = not (grad.view(np.uint32) & 0xFFFF).any()
    assert_all_ranks(sixteen_bit, f"{kind}: averaged gradient holds values that are not {kind}")
    u = cases.UNIT_ROUNDOFF[kind]
    error = cases.relative_error(grad, reference["grad"])
    assert_all_ranks(u / 100 < error < 2 * u, f"{kind}: gradient relative error {error:.3g} (u = {u:.3g})")
    if WORLD.Get_size() <= 2:  # same data, same arithmetic: the threads backend gives the same bits
        threads = launch_threads(cases.train, WORLD.Get_size(), args=(hook,), timeout=60)[WORLD.Get_rank()]
        same = np.array_equal(threads["params"], got["params"]) and np.array_equal(threads["grad"], grad)
        assert_all_ranks(same, f"{kind}: MPI and threads training differ")


@pytest.mark.parametrize("op", OPS)
def test_16bit_allreduces_complete_when_waited_in_any_order(comm, op):
    bufs = [cases.encode(cases.rank_values(comm.rank, n), op) for n in (10_001, 3, 50_000)]
    works = [comm.iallreduce(b, op) for b in bufs]
    for work in reversed(works):  # the newest first: it must drive the older ones on
        work.wait()
    for b, n in zip(bufs, (10_001, 3, 50_000)):
        expected = sum(cases.rank_values(r, n) for r in range(comm.size))
        assert_all_ranks(np.array_equal(cases.decode(b, op), expected), f"n={n}: wrong sum")
