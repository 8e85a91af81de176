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
