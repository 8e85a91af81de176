"""DDP on the threads backend: N ranks as threads, checked against one process on the global batch."""

import pytest

import ddp_cases
from ddpgrad.distributed import launch_threads


def run(world, fn, *args, **kwargs):
    return launch_threads(fn, world, args=args, kwargs=kwargs, timeout=60)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_ddp_matches_single_process_on_global_batch(world, opt_name):
    results = run(world, ddp_cases.scenario_matches_single_process, "mlp", opt_name, 4, 1, 0.0003)
    for rank, r in enumerate(results):
        assert r["mismatches"] == [], f"rank {rank}: {r['mismatches']}"
        assert r["buckets"] > 2, "bucket cap should force several buckets"


@pytest.mark.parametrize("world", [2, 3])
def test_no_sync_accumulation_matches_single_process(world):
    results = run(world, ddp_cases.scenario_matches_single_process, "mlp", "sgd", 3, 3)
    assert all(r["mismatches"] == [] for r in results), results


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_parameter_unused_on_some_ranks_counts_as_zero(world, opt_name):
    results = run(world, ddp_cases.scenario_matches_single_process, "two_heads", opt_name, 4)
    assert all(r["mismatches"] == [] for r in results), results


@pytest.mark.parametrize("world", [2, 3])
def test_several_dtypes_in_one_model(world):
    results = run(world, ddp_cases.scenario_matches_single_process, "mixed", "adam", 4, 1, 0.0002)
    assert all(r["mismatches"] == [] for r in results), results


def test_grads_are_bucket_views_and_survive_zero_grad():
    results = run(2, ddp_cases.scenario_grads_are_bucket_views)
    for r in results:
        assert r["all_views"]
        assert r["same_arrays_steps_1_2"], "zero_grad(set_to_none=True) must not reallocate gradients"
        assert r["buckets"] > 1
    assert results[0]["order"] == results[1]["order"], "bucket order must be identical on every rank"


def test_model_that_differs_across_ranks_errors_on_every_rank():
    messages = run(3, ddp_cases.scenario_model_mismatch)
    for m in messages:
        assert m is not None and "differs from rank 0" in m and "[9, 6]" in m and "[10, 6]" in m, m


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("divide_by_initial_world_size", [True, False])
def test_join_on_uneven_inputs_matches_single_process_on_the_remaining_data(world, divide_by_initial_world_size):
    results = run(world, ddp_cases.scenario_join_uneven_inputs, "sgd", 3, divide_by_initial_world_size)
    assert all(r["mismatches"] == [] for r in results), results


@pytest.mark.parametrize("world", [2, 3])
def test_join_with_the_optimizer_keeps_replicas_identical_over_epochs(world):
    results = run(world, ddp_cases.scenario_join_uneven_inputs, "adam", 3, True, 3)
    assert all(r["mismatches"] == [] for r in results), results


def test_join_with_adam_matches_single_process():
    results = run(3, ddp_cases.scenario_join_uneven_inputs, "adam")
    assert all(r["mismatches"] == [] for r in results), results


def test_backward_that_raised_before_any_bucket_went_out_leaves_ddp_ready():
    results = run(2, ddp_cases.scenario_backward_raises_then_trains, "early")
    for r in results:
        assert r["error"] is None and r["mismatches"] == [], r


def test_backward_that_raised_after_a_bucket_went_out_is_an_error_at_the_next_forward():
    results = run(2, ddp_cases.scenario_backward_raises_then_trains, "late")
    for r in results:
        assert r["error"] is not None and "previous backward pass" in r["error"] and "bucket(s) [0" in r["error"], r


@pytest.mark.parametrize("kind, named", [("shape", "buffer 'running' of shape [3]"),
                                         ("missing", "nothing there"),
                                         ("requires_grad", "requires_grad=False")])
def test_buffers_and_requires_grad_that_differ_are_named_on_every_rank(kind, named):
    messages = run(3, ddp_cases.scenario_buffer_differs, kind)
    for m in messages:
        assert m is not None and "differs from rank 0" in m and named in m, m


def test_bool_and_int8_buffers_are_copied_from_rank0():
    results = run(3, ddp_cases.scenario_bool_and_int8_buffers_come_from_rank0)
    assert results == [([True, False, True], [0, 0, 7])] * 3


def test_debug_names_the_rank_and_parameter_whose_gradient_is_not_finite(monkeypatch):
    monkeypatch.setenv("DDPGRAD_DEBUG", "1")
    messages = run(3, ddp_cases.scenario_nonfinite_gradient_is_named, 1)
    for m in messages:
        assert m is not None and "on rank 1 is not finite" in m and "parameter '" in m, m


def test_ranks_out_of_step_are_named_at_the_end_of_backward():
    import ddpgrad.distributed as dist
    from ddpgrad.distributed.comm import CollectiveMismatch

    def body():
        comm = dist.get_comm()
        model = ddp_cases.make_model("mlp")
        ddp = ddp_cases.DDP(model)
        if comm.rank == 1:
            ddp.reducer.step += 1  # as if this rank had trained one more step than the others
        x = ddp_cases.ddpgrad.randn(2, ddp_cases.IN, dtype=ddp_cases.ddpgrad.float64)
        try:
            ddp(x).sum().backward()
        except CollectiveMismatch as exc:
            return str(exc)
        return None

    messages = run(2, body)
    for m in messages:
        assert m is not None and "out of step" in m and "rank 0: step 0" in m and "rank 1: step 1" in m, m


def test_linear_writes_its_gradients_straight_into_the_bucket_views(monkeypatch):
    import ddpgrad.ops.nn as ops_nn

    used = []
    original = ops_nn.gradient_destination

    def spy(ctx, i):
        found = original(ctx, i)
        if getattr(ctx.next_nodes[i], "destination", None) is not None:  # a DDP parameter, not the oracle's
            used.append(found is not None)
        return found

    monkeypatch.setattr(ops_nn, "gradient_destination", spy)
    results = run(2, ddp_cases.scenario_matches_single_process, "mlp", "sgd", 4, 1, 0.0003)
    assert all(r["mismatches"] == [] for r in results), results
    steps, ranks, linear_params = ddp_cases.STEPS, 2, 6
    assert len(used) == steps * ranks * linear_params and all(used), f"{used.count(False)} of {len(used)} copied"


@pytest.mark.parametrize("world", [2, 3])
def test_no_sync_gradient_of_a_branch_the_synchronised_pass_skips_is_averaged(world):
    results = run(world, ddp_cases.scenario_no_sync_branch_unused_in_the_synchronised_pass)
    assert all(r == [] for r in results), results


def test_join_refuses_two_models_with_advice():
    from ddpgrad.distributed.algorithms import Join

    def body():
        a, b = ddp_cases.DDP(ddp_cases.make_model("mlp")), ddp_cases.DDP(ddp_cases.make_model("mlp"))
        try:
            Join([a, b])
        except ValueError as exc:
            return str(exc)
        return None

    for m in run(2, body):
        assert m is not None and "one DistributedDataParallel model" in m, m


def test_backward_that_raised_late_in_a_world_of_one_leaves_ddp_ready():
    results = run(1, ddp_cases.scenario_backward_raises_then_trains, "late")
    assert results[0]["error"] is None and results[0]["mismatches"] == [], results
