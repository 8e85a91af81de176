"""DDP scenarios shared by the threads backend (plain pytest) and the MPI suite (tests/mpi).

Each scenario runs on the calling rank (``ddpgrad.distributed`` must be initialised) and returns
plain data; the oracle is a single-process run on the global batch, computed on the same rank
without any communication.
"""

from __future__ import annotations

import numpy as np

import ddpgrad
import ddpgrad.distributed as dist
import ddpgrad.nn as nn
import ddpgrad.optim as optim
from ddpgrad.nn.parallel import DistributedDataParallel as DDP

IN, HIDDEN, OUT = 6, 9, 3
STEPS = 5


class TwoHeads(nn.Module):
    """A trunk, a head used only for flagged samples, and a layer no sample ever uses."""

    def __init__(self, dtype):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(IN, HIDDEN, dtype=dtype), nn.Tanh(), nn.Linear(HIDDEN, OUT, dtype=dtype))
        self.extra = nn.Linear(IN, OUT, dtype=dtype)
        self.never = nn.Linear(IN, OUT, dtype=dtype)

    def forward(self, x, flags):
        out = self.trunk(x)
        if bool(flags.any()):
            out = out + self.extra(x) * flags.to(x.dtype).unsqueeze(1)
        return out


class MixedPrecision(nn.Module):
    """A float64 layer feeding a float32 layer: two dtypes, so two bucket streams."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(IN, HIDDEN, dtype=ddpgrad.float64)
        self.b = nn.Linear(HIDDEN, OUT, dtype=ddpgrad.float32)

    def forward(self, x, flags=None):
        return self.b(self.a(x).tanh().float()).double()


def make_model(kind, device="cpu"):
    return _make_model(kind).to(device)


def _make_model(kind):
    ddpgrad.manual_seed(1234)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(IN, HIDDEN, dtype=ddpgrad.float64), nn.ReLU(),
                             nn.Linear(HIDDEN, HIDDEN, dtype=ddpgrad.float64), nn.Tanh(),
                             nn.Linear(HIDDEN, OUT, dtype=ddpgrad.float64))
    if kind == "two_heads":
        return TwoHeads(ddpgrad.float64)
    if kind == "mixed":
        return MixedPrecision()
    raise ValueError(kind)


def make_optimizer(name, params):
    if name == "sgd":
        return optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    if name == "adam":
        return optim.Adam(params, lr=0.01, weight_decay=1e-3)
    raise ValueError(name)


def make_data(world, per_rank, steps, micro=1):
    rng = np.random.default_rng(7)
    n = world * per_rank * steps * micro
    x = rng.standard_normal((n, IN))
    y = rng.standard_normal((n, OUT))
    flags = np.zeros(n, dtype=bool)
    # only samples that land on rank 0 are flagged: 'extra' is unused on every other rank
    for start in range(0, n, world * per_rank):
        flags[start:start + per_rank:2] = True
    return x, y, flags


def _forward(model, x, flags):
    try:
        return model(x, flags)
    except TypeError:
        return model(x)


def _loss(model, x, y, flags):
    return ((_forward(model, x, flags) - y) ** 2).mean()


def _batch(device, *arrays):
    return tuple(ddpgrad.tensor(a, device=device) for a in arrays)


def _host(model):
    return {n: p.detach().cpu().numpy().copy() for n, p in model.named_parameters()}


def train_single_process(kind, opt_name, world, per_rank, steps=STEPS, micro=1, device="cpu"):
    """The oracle: one process, global batch world*per_rank, no communication."""
    model = make_model(kind, device)
    opt = make_optimizer(opt_name, model.parameters())
    x, y, flags = make_data(world, per_rank, steps, micro)
    g = world * per_rank
    for step in range(steps):
        opt.zero_grad()
        for m in range(micro):
            s = slice((step * micro + m) * g, (step * micro + m + 1) * g)
            _loss(model, *_batch(device, x[s], y[s], flags[s])).backward()
        opt.step()
    return _host(model)


def train_ddp(kind, opt_name, per_rank, steps=STEPS, micro=1, bucket_cap_mb=None, device="cpu"):
    """The same training on this rank's shard of every global batch, under DDP."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model(kind, device)
    if rank > 0:  # DDP must overwrite every rank's replica with rank 0's
        with ddpgrad.no_grad():
            for p in model.parameters():
                p.add_(rank)
    ddp = DDP(model, bucket_cap_mb=bucket_cap_mb)
    opt = make_optimizer(opt_name, ddp.parameters())
    x, y, flags = make_data(world, per_rank, steps, micro)
    g = world * per_rank
    for step in range(steps):
        opt.zero_grad()
        for m in range(micro):
            base = (step * micro + m) * g + rank * per_rank
            s = slice(base, base + per_rank)
            batch = _batch(device, x[s], y[s], flags[s])
            if m < micro - 1:
                with ddp.no_sync():
                    _loss(ddp, *batch).backward()
            else:
                _loss(ddp, *batch).backward()
        opt.step()
    return _host(model), ddp


def compare(ddp_params, reference, rtol_f64=1e-10, rtol_f32=1e-5):
    """Names of parameters that differ from the reference beyond float rounding, with the error."""
    bad = []
    for name, ref in reference.items():
        got = ddp_params[name]
        rtol = rtol_f64 if ref.dtype == np.float64 else rtol_f32
        err = np.max(np.abs(got - ref) / (np.abs(ref) + 1e-12)) if ref.size else 0.0
        if not np.allclose(got, ref, rtol=rtol, atol=rtol * 1e-2):
            bad.append(f"{name}: max relative error {err:.3g}")
    return bad


def scenario_matches_single_process(kind="mlp", opt_name="sgd", per_rank=4, micro=1, bucket_cap_mb=None,
                                    device="cpu"):
    world = dist.get_world_size()
    got, ddp = train_ddp(kind, opt_name, per_rank, micro=micro, bucket_cap_mb=bucket_cap_mb, device=device)
    reference = train_single_process(kind, opt_name, world, per_rank, micro=micro, device="cpu")
    # in the mixed model float32 arithmetic sits on every gradient path: float32 tolerance for all
    rtol_f64 = 1e-5 if kind == "mixed" else 1e-10
    return {"mismatches": compare(got, reference, rtol_f64=rtol_f64), "buckets": len(ddp.reducer.buckets)}


def scenario_grads_are_bucket_views():
    model = make_model("mlp")
    ddp = DDP(model, bucket_cap_mb=0.0005)
    opt = make_optimizer("sgd", ddp.parameters())
    x, y, flags = make_data(dist.get_world_size(), 2, 3)
    seen = []
    for step in range(3):
        opt.zero_grad()  # set_to_none=True
        loss = _loss(ddp, ddpgrad.tensor(x[:2]), ddpgrad.tensor(y[:2]), None)
        loss.backward()
        views = [id(p.grad._data) for p in model.parameters()]
        shares = [any(np.shares_memory(p.grad._data, b.buffer) for b in ddp.reducer.buckets)
                  for p in model.parameters()]
        seen.append((views, all(shares)))
        opt.step()
    return {
        "all_views": all(s for _, s in seen),
        "same_arrays_steps_1_2": seen[1][0] == seen[2][0],
        "buckets": len(ddp.reducer.buckets),
        "order": [list(b.members) for b in ddp.reducer.buckets],
    }


def scenario_model_mismatch():
    rank = dist.get_rank()
    width = HIDDEN + (1 if rank == dist.get_world_size() - 1 else 0)
    model = nn.Sequential(nn.Linear(IN, width), nn.ReLU(), nn.Linear(width, OUT))
    try:
        DDP(model)
    except RuntimeError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# Uneven inputs (join), failures inside backward, cross-rank checks


def uneven_steps(rank):
    """Rank r has STEPS - r batches (at least 1): every rank runs out at another step."""
    return max(1, STEPS - rank)


def train_single_process_uneven(opt_name, world, per_rank, divide_by_initial_world_size, epochs=1):
    """The oracle of join(): at step s the ranks that still have data contribute their shard;
    the gradient is their sum over the world size (or over the ranks still training)."""
    model = make_model("mlp")
    opt = make_optimizer(opt_name, model.parameters())
    x, y, flags = make_data(world, per_rank, STEPS)
    g = world * per_rank
    for step in list(range(STEPS)) * epochs:
        active = [r for r in range(world) if uneven_steps(r) > step]
        if not active:
            continue
        rows = np.concatenate([np.arange(step * g + r * per_rank, step * g + (r + 1) * per_rank) for r in active])
        divisor = world if divide_by_initial_world_size else len(active)
        opt.zero_grad()
        (_loss(model, *_batch("cpu", x[rows], y[rows], flags[rows])) * (len(active) / divisor)).backward()
        opt.step()
    return _host(model)


def scenario_join_uneven_inputs(opt_name="sgd", per_rank=3, divide_by_initial_world_size=True, epochs=1):
    """join() on uneven inputs for ``epochs`` epochs; with more than one, the optimizer joins too
    (``Join([ddp, opt])``), so the replicas' optimizer state stays identical across epochs."""
    from ddpgrad.distributed.algorithms import Join

    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model("mlp")
    ddp = DDP(model, bucket_cap_mb=0.0003)
    opt = make_optimizer(opt_name, ddp.parameters())
    x, y, flags = make_data(world, per_rank, STEPS)
    g = world * per_rank
    for _ in range(epochs):
        joined = Join([ddp, opt], divide_by_initial_world_size=divide_by_initial_world_size) if epochs > 1 else \
            ddp.join(divide_by_initial_world_size=divide_by_initial_world_size)
        _train_uneven_epoch(joined, ddp, opt, x, y, rank, g, per_rank)
    reference = train_single_process_uneven(opt_name, world, per_rank, divide_by_initial_world_size, epochs)
    return {"mismatches": compare(_host(model), reference)}


def _train_uneven_epoch(joined, ddp, opt, x, y, rank, g, per_rank):
    with joined:
        for step in range(uneven_steps(rank)):
            s = slice(step * g + rank * per_rank, step * g + (rank + 1) * per_rank)
            opt.zero_grad()
            xb, yb = _batch("cpu", x[s], y[s])
            ((ddp(xb) - yb) ** 2).mean().backward()  # one forward per step: each one is counted
            opt.step()


class RaiseOnce:
    """A tensor hook that raises the first time it runs (a user error caught in the loop)."""

    def __init__(self):
        self.raised = False

    def __call__(self, grad):
        if not self.raised:
            self.raised = True
            raise ValueError("hook failed once")
        return grad


def scenario_backward_raises_then_trains(where):
    """A hook raises in the first backward, the loop catches it and goes on. ``where`` = "early":
    before any gradient is final; "late": after the last layer's bucket went out. Returns the
    mismatches against one process that never saw the failed step, or the error of the step after."""
    rank, world = dist.get_rank(), dist.get_world_size()
    per_rank = 2
    model = make_model("mlp")
    ddp = DDP(model, bucket_cap_mb=0.0003)
    opt = make_optimizer("sgd", ddp.parameters())
    x, y, flags = make_data(world, per_rank, STEPS)
    g = world * per_rank
    hook = RaiseOnce()
    for step in range(STEPS):
        s = slice(step * g + rank * per_rank, step * g + (rank + 1) * per_rank)
        opt.zero_grad()
        try:
            batch = _batch("cpu", x[s], y[s], flags[s])
            if step == 0:
                out = ddp(batch[0])
                if where == "early":
                    out.register_hook(hook)
                else:  # the input of the first layer's activation: its gradient comes after the last layer's
                    model[0].weight.register_hook(hook)
                ((out - batch[1]) ** 2).mean().backward()
            else:
                _loss(ddp, *batch).backward()
        except ValueError:
            continue
        except RuntimeError as exc:
            return {"error": str(exc)}
        opt.step()
    model_ref = make_model("mlp")
    opt_ref = make_optimizer("sgd", model_ref.parameters())
    for step in range(1, STEPS):
        s = slice(step * g, (step + 1) * g)
        opt_ref.zero_grad()
        _loss(model_ref, *_batch("cpu", x[s], y[s], flags[s])).backward()
        opt_ref.step()
    return {"mismatches": compare(_host(model), _host(model_ref)), "error": None}


def scenario_buffer_differs(kind):
    """Rank world-1 has a buffer of another shape ("shape"), none ("missing"), or a parameter that
    does not require grad ("requires_grad"); DDP construction must name it on every rank."""
    last = dist.get_rank() == dist.get_world_size() - 1
    model = make_model("mlp")
    if kind == "shape":
        model.register_buffer("running", ddpgrad.zeros(4 if last else 3))
    elif kind == "missing" and not last:
        model.register_buffer("running", ddpgrad.zeros(3))
    elif kind == "requires_grad" and last:
        model[0].bias.requires_grad_(False)
    try:
        DDP(model)
    except RuntimeError as exc:
        return str(exc)
    return None


def scenario_bool_and_int8_buffers_come_from_rank0():
    rank = dist.get_rank()
    model = make_model("mlp")
    model.register_buffer("mask", ddpgrad.tensor(np.array([rank == 0, rank != 0, True])))
    model.register_buffer("codes", ddpgrad.tensor(np.array([rank, -rank, 7], dtype=np.int8)))
    DDP(model)
    return model.mask.numpy().tolist(), model.codes.numpy().tolist()


def scenario_nonfinite_gradient_is_named(bad_rank):
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model("mlp")
    ddp = DDP(model)
    x, y, flags = make_data(world, 2, 1)
    if rank == bad_rank:
        x = x.copy()
        x[rank * 2] = np.inf
    s = slice(rank * 2, rank * 2 + 2)
    try:
        _loss(ddp, *_batch("cpu", x[s], y[s], flags[s])).backward()
    except FloatingPointError as exc:
        return str(exc)
    return None


class Branches(nn.Module):
    """A head used only when asked: unused in some micro-batches."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(IN, OUT, dtype=ddpgrad.float64)
        self.b = nn.Linear(IN, OUT, dtype=ddpgrad.float64)

    def forward(self, x, use_b):
        out = self.a(x)
        return out + self.b(x) if use_b else out


def scenario_no_sync_branch_unused_in_the_synchronised_pass():
    """Micro-batch 1 (no_sync) uses head b, micro-batch 2 (synchronised) does not: b's gradient
    is the accumulated one, averaged like the rest (one process on the global batches: oracle)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    x = np.random.default_rng(3).standard_normal((2, world, 4, IN))
    ddpgrad.manual_seed(0)
    model = Branches()
    ddp = DDP(model)
    with ddp.no_sync():
        (ddp(ddpgrad.tensor(x[0, rank]), True) ** 2).mean().backward()
    (ddp(ddpgrad.tensor(x[1, rank]), False) ** 2).mean().backward()
    ddpgrad.manual_seed(0)
    oracle = Branches()
    for micro in range(2):
        ((oracle(ddpgrad.tensor(x[micro].reshape(world * 4, IN)), micro == 0) ** 2).mean()).backward()
    got = {n: p.grad.numpy() for n, p in model.named_parameters()}
    return compare(got, {n: p.grad.numpy() for n, p in oracle.named_parameters()})
