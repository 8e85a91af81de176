"""DDPGRAD_TIMELINE / DDP(timeline=...): a Chrome-trace JSON per rank that shows each step."""

import json

import numpy as np
import pytest

import ddp_cases
import ddpgrad
from ddpgrad.distributed import launch_threads
from ddpgrad.distributed.timeline import Timeline, timeline_path


def train_with_timeline(path, steps=3):
    model = ddp_cases.make_model("mlp")
    ddp = ddp_cases.DDP(model, bucket_cap_mb=0.0003, timeline=path)
    opt = ddp_cases.make_optimizer("sgd", ddp.parameters())
    rng = np.random.default_rng(0)
    for _ in range(steps):
        opt.zero_grad()
        ddp(ddpgrad.tensor(rng.standard_normal((4, ddp_cases.IN)))).sum().backward()
        opt.step()
    ddp.timeline.close()
    return len(ddp.reducer.buckets)


def spans(events, name):
    return [e for e in events if e.get("ph") == "X" and e["name"] == name]


@pytest.mark.parametrize("world", [1, 2])
def test_timeline_shows_forward_backward_buckets_wait_and_step_per_rank(tmp_path, world):
    path = str(tmp_path / "trace-{rank}.json")
    buckets = launch_threads(train_with_timeline, world, args=(path,), timeout=60)[0]
    for rank in range(world):
        events = json.loads(open(timeline_path(path, rank)).read())
        assert {e["pid"] for e in events} == {rank}
        forwards, backwards, waits = spans(events, "forward"), spans(events, "backward (from the first gradient)"), \
            spans(events, "wait for reductions")
        steps = spans(events, "after backward: optimizer step, loop")
        assert len(forwards) == len(backwards) == len(waits) == 3 and len(steps) == 2
        flights = [e for e in events if e.get("ph") == "X" and e["name"].endswith("in flight")]
        readies = [e for e in events if e.get("ph") == "i" and e["name"].endswith("ready")]
        assert len(flights) == len(readies) >= 3 * 2, "every step: each bucket ready, then in flight"
        for f, b, w in zip(forwards, backwards, waits):
            assert f["ts"] + f["dur"] <= b["ts"] <= w["ts"], "forward, then backward, then the wait"
        last_wait = waits[-1]
        for flight in flights[-buckets:]:
            assert backwards[-1]["ts"] <= flight["ts"], "a bucket goes out during backward"
            assert flight["ts"] + flight["dur"] <= last_wait["ts"] + last_wait["dur"] + 1, "flights end by the wait's end"


def test_timeline_is_off_by_default_and_env_turns_it_on(tmp_path, monkeypatch):
    model = ddp_cases.make_model("mlp")
    assert launch_threads(lambda: ddp_cases.DDP(model).timeline, 1)[0] is None
    monkeypatch.setenv("DDPGRAD_TIMELINE", str(tmp_path / "t"))
    timeline = launch_threads(lambda: ddp_cases.DDP(model).timeline, 1)[0]
    assert isinstance(timeline, Timeline) and timeline.path.endswith("t.rank0.json")
    timeline.close()
    assert json.loads((tmp_path / "t.rank0.json").read_text())[-1]["name"] == "process_name"
