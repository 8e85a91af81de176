"""DDP under mpiexec: N MPI ranks ≡ one process on the global batch, judged on every rank."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import WORLD, assert_all_ranks

import ddp_cases
import ddpgrad.distributed as dist


@pytest.fixture(scope="module", autouse=True)
def process_group():
    if not dist.is_initialized():
        dist.init_process_group("mpi" if WORLD.Get_size() > 1 else "auto", timeout=60)
    yield


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_ddp_matches_single_process_on_global_batch(opt_name):
    r = ddp_cases.scenario_matches_single_process("mlp", opt_name, 4, 1, 0.0003)
    assert_all_ranks(r["mismatches"] == [], r["mismatches"])
    assert_all_ranks(r["buckets"] > 2, f"only {r['buckets']} buckets")


@pytest.mark.mpi(min_size=1)
def test_no_sync_accumulation_matches_single_process():
    r = ddp_cases.scenario_matches_single_process("mlp", "sgd", 3, 3)
    assert_all_ranks(r["mismatches"] == [], r["mismatches"])


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_parameter_unused_on_some_ranks_counts_as_zero(opt_name):
    r = ddp_cases.scenario_matches_single_process("two_heads", opt_name, 4)
    assert_all_ranks(r["mismatches"] == [], r["mismatches"])


@pytest.mark.mpi(min_size=1)
def test_several_dtypes_in_one_model():
    r = ddp_cases.scenario_matches_single_process("mixed", "adam", 4, 1, 0.0002)
    assert_all_ranks(r["mismatches"] == [], r["mismatches"])


@pytest.mark.mpi(min_size=1)
def test_grads_are_bucket_views_and_bucket_order_agrees():
    r = ddp_cases.scenario_grads_are_bucket_views()
    assert_all_ranks(r["all_views"] and r["same_arrays_steps_1_2"], r)
    orders = WORLD.allgather(r["order"])
    assert_all_ranks(all(o == orders[0] for o in orders), orders)


@pytest.mark.mpi(min_size=2)
def test_model_that_differs_across_ranks_errors_on_every_rank():
    message = ddp_cases.scenario_model_mismatch()
    assert_all_ranks(message is not None and "differs from rank 0" in message, message)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("divide_by_initial_world_size", [True, False])
def test_join_on_uneven_inputs_matches_single_process_on_the_remaining_data(divide_by_initial_world_size):
    r = ddp_cases.scenario_join_uneven_inputs("adam", 3, divide_by_initial_world_size)
    assert_all_ranks(r["mismatches"] == [], r["mismatches"])


@pytest.mark.mpi(min_size=2)
def test_backward_that_raised_is_recovered_or_refused_on_every_rank():
    early = ddp_cases.scenario_backward_raises_then_trains("early")
    assert_all_ranks(early["error"] is None and early["mismatches"] == [], early)
    late = ddp_cases.scenario_backward_raises_then_trains("late")
    assert_all_ranks(late["error"] is not None and "previous backward pass" in late["error"], late)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("kind", ["shape", "missing", "requires_grad"])
def test_buffers_and_requires_grad_that_differ_are_named_on_every_rank(kind):
    message = ddp_cases.scenario_buffer_differs(kind)
    assert_all_ranks(message is not None and "differs from rank 0" in message, message)


@pytest.mark.mpi(min_size=2)
def test_bool_and_int8_buffers_are_copied_from_rank0():
    got = ddp_cases.scenario_bool_and_int8_buffers_come_from_rank0()
    assert_all_ranks(got == ([True, False, True], [0, 0, 7]), got)


FAILING_JOB = textwrap.dedent("""
    import ddpgrad, ddpgrad.nn as nn
    import ddpgrad.distributed as dist
    from ddpgrad.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group()
    model = DDP(nn.Linear(4, 2))
    if dist.get_rank() == 2:
        raise ValueError("boom on purpose")
    for _ in range(1000):
        model(ddpgrad.randn(3, 4)).sum().backward()
""")


@pytest.mark.mpi(min_size=1, max_size=1)
def test_exception_on_one_rank_ends_a_4_rank_ddp_job_fast(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAILING_JOB)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", DDPGRAD_TIMEOUT="300")
    for name in [k for k in env if k.startswith(("PMI_", "MPI_", "HYDRA", "OMPI_"))]:
        del env[name]  # a fresh job, not a child of this one
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    start = time.monotonic()
    proc = subprocess.run([mpiexec, "-n", "4", sys.executable, str(script)], env=env,
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert "[rank 2]" in proc.stderr and "boom on purpose" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.mpi(min_size=1)
def test_ddp_with_gpu_gradients_matches_single_process():
    import ddpgrad

    if not ddpgrad.cuda.is_available():
        pytest.skip("no CUDA GPU with CuPy here (pip install 'ddpgrad[gpu]' on a GPU machine)")
    r = ddp_cases.scenario_matches_single_process("mlp", "adam", 4, 1, 0.0003, "cuda")
    assert_all_ranks(r["mismatches"] == [], r["mismatches"])


@pytest.mark.mpi(min_size=1)
def test_no_sync_gradient_of_a_branch_the_synchronised_pass_skips_is_averaged():
    mismatches = ddp_cases.scenario_no_sync_branch_unused_in_the_synchronised_pass()
    assert_all_ranks(mismatches == [], mismatches)
