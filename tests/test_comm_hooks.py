"""DDP communication hooks and the 16-bit sums under them (threads and local backends): bfloat16
conversion, exact 16-bit reductions, and compressed training that stays close to uncompressed."""

import os
import sys

import numpy as np
import pytest

import ddpgrad
import ddpgrad.distributed as dist
import ddpgrad.nn as nn
import ddpgrad.optim as optim
from ddpgrad.distributed import launch_threads
from ddpgrad.distributed.algorithms.ddp_comm_hooks import default_hooks
from ddpgrad.distributed.comm import LocalCommunicator, current_thread_communicator
from ddpgrad.distributed.comm.sum16 import (
    CHUNK,
    add_bf16_,
    add_fp16_,
    sum_rows_16,
    bf16_bits_to_float32,
    float_to_bf16_bits,
    float_to_fp16,
    fp16_to_float32,
)
from ddpgrad.nn.parallel import DistributedDataParallel as DDP

HOOKS = {"fp16": default_hooks.fp16_compress_hook, "bf16": default_hooks.bf16_compress_hook}
UNIT_ROUNDOFF = {"fp16": 2.0**-11, "bf16": 2.0**-8}
"""Relative rounding error of one rounding to the format (half an ulp at 1)."""


def run(fn, world, *args):
    return launch_threads(fn, world, args=args, timeout=60)


def bits32(*values):
    return np.array(values, dtype=np.uint32).view(np.float32)


def random_finite(rng, n, dtype):
    """Random bit patterns of ``dtype`` (float16, or uint16 holding bfloat16) over the whole
    range, infinities and NaNs replaced by 1.0."""
    bits = rng.integers(0, 2**16, size=n, dtype=np.uint16)
    values = bits.view(np.float16) if dtype == np.float16 else bf16_bits_to_float32(bits)
    ones = np.float16(1).view(np.uint16) if dtype == np.float16 else np.uint16(0x3F80)
    return np.where(np.isfinite(values), bits, ones).view(dtype)


# ---------------------------------------------------------------------------------------------
# bfloat16 as uint16 bits


@pytest.mark.parametrize("f32_bits, bf16_bits", [
    (0x3F800000, 0x3F80),  # 1.0
    (0x3F807FFF, 0x3F80),  # just below half an ulp: down
    (0x3F808000, 0x3F80),  # tie, even neighbour below
    (0x3F808001, 0x3F81),  # just above half an ulp: up
    (0x3F818000, 0x3F82),  # tie, odd neighbour below: up to even
    (0xBF818000, 0xBF82),  # the same, negative
    (0x3FFFFFFF, 0x4000),  # rounding carries into the exponent
    (0x7F7F7FFF, 0x7F7F),  # largest value that stays finite
    (0x7F7FFFFF, 0x7F80),  # FLT_MAX overflows to infinity
    (0x7F800000, 0x7F80),  # +inf
    (0xFF800000, 0xFF80),  # -inf
    (0x80000000, 0x8000),  # -0 keeps its sign
    (0x00008000, 0x0000),  # subnormal tie, even neighbour is zero
    (0x00018000, 0x0002),  # subnormal tie, odd neighbour below
    (0x00000001, 0x0000),  # smallest subnormal rounds to zero
    (0xFFC00000, 0xFFC0),  # quiet NaN, negative
    (0x7FC12345, 0x7FC1),  # NaN payload's upper bits kept
])
def test_float_to_bf16_rounds_to_nearest_even_on_hand_computed_cases(f32_bits, bf16_bits):
    got = float_to_bf16_bits(bits32(f32_bits))
    assert got.dtype == np.uint16
    assert int(got[0]) == bf16_bits, f"{f32_bits:#010x} -> {int(got[0]):#06x}, expected {bf16_bits:#06x}"


def test_signalling_nan_with_payload_only_in_dropped_bits_stays_nan():
    got = float_to_bf16_bits(bits32(0x7F800001, 0xFF800001))
    assert np.isnan(bf16_bits_to_float32(got)).all(), [hex(b) for b in got]
    assert int(got[1]) & 0x8000, "sign of a NaN is kept"


def test_every_bf16_bit_pattern_round_trips():
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    wide = bf16_bits_to_float32(bits)
    assert wide.dtype == np.float32
    np.testing.assert_array_equal(wide.view(np.uint32), bits.astype(np.uint32) << 16)
    back = float_to_bf16_bits(wide)
    nan = np.isnan(wide)
    np.testing.assert_array_equal(back[~nan], bits[~nan])
    assert np.isnan(bf16_bits_to_float32(back[nan])).all()


def test_float_to_bf16_matches_torch_over_the_whole_float32_range():
    torch = pytest.importorskip("torch", reason="parity with torch.bfloat16 needs PyTorch")
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    ties = (random_bits & 0xFFFF0000) | 0x8000  # exactly half an ulp: both tie directions
    x = np.concatenate([random_bits, ties]).view(np.float32)
    x = x[~np.isnan(x)]
    expected = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(float_to_bf16_bits(x), expected)
    np.testing.assert_array_equal(float_to_bf16_bits(x.astype(np.float64)), expected)  # via float32, as torch
    widened = torch.from_numpy(expected.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(bf16_bits_to_float32(expected), widened)


def test_bf16_conversions_write_into_out_and_keep_shape():
    x = np.arange(-6, 6, dtype=np.float32).reshape(3, 4) / 4
    bits = float_to_bf16_bits(x)
    assert bits.shape == (3, 4)
    out = np.empty((3, 4), np.float32)
    assert bf16_bits_to_float32(bits, out=out) is out
    np.testing.assert_array_equal(out, x)


# ---------------------------------------------------------------------------------------------
# float16 by bit operations (NumPy's own cast is slow for subnormals)


def test_float_to_fp16_matches_numpy_cast_bitwise_over_the_whole_float32_range():
    rng = np.random.default_rng(3)
    random_bits = rng.integers(0, 2**32, size=3 * CHUNK + 11, dtype=np.uint64).astype(np.uint32)
    ties = (random_bits & 0xFFFFE000) | 0x1000  # exactly half a float16 ulp (normal range)
    sweep = np.arange(0, 0x48000000, 0x1000, dtype=np.uint32)  # zero, subnormals, normals, overflow
    x = np.concatenate([random_bits, ties, sweep, sweep | 0x80000000]).view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = x.astype(np.float16)
    got = float_to_fp16(x)
    assert got.dtype == np.float16 and got.shape == x.shape
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan].view(np.uint16), expected[~nan].view(np.uint16))
    assert np.isnan(got[nan]).all()
    assert float_to_fp16(x[:6].reshape(2, 3)).shape == (2, 3)


def test_fp16_to_float32_is_exact_for_every_bit_pattern():
    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    expected = halves.astype(np.float32)
    out = np.empty(2**16, np.float32)
    assert fp16_to_float32(halves, out=out) is out
    nan = np.isnan(expected)
    np.testing.assert_array_equal(out[~nan].view(np.uint32), expected[~nan].view(np.uint32))
    assert np.isnan(out[nan]).all()
    np.testing.assert_array_equal(float_to_fp16(out[~nan]).view(np.uint16), halves[~nan].view(np.uint16))


# ---------------------------------------------------------------------------------------------
# The pairwise sums every backend applies


def test_fp16_pairwise_sum_is_the_correctly_rounded_sum():
    rng = np.random.default_rng(1)
    a, b = random_finite(rng, 3 * CHUNK + 5, np.float16), random_finite(rng, 3 * CHUNK + 5, np.float16)
    with np.errstate(over="ignore"):
        exact = (a.astype(np.float64) + b.astype(np.float64)).astype(np.float16)  # f64 sum is exact
        total = a.copy()
        add_fp16_(total, b)
    np.testing.assert_array_equal(total.view(np.uint16), exact.view(np.uint16))


@pytest.mark.parametrize("a, b, expected", [
    (0x3F80, 0x3B80, 0x3F80),  # 1 + 2**-8: a tie, stays at even 1.0
    (0x3F81, 0x3B80, 0x3F82),  # (1 + 2**-7) + 2**-8: a tie, up to even
    (0x3F80, 0xBF80, 0x0000),  # 1 - 1
    (0x7F7F, 0x7F7F, 0x7F80),  # overflow to infinity
    (0x4040, 0x4000, 0x40A0),  # 3 + 2 = 5
])
def test_bf16_pairwise_sum_on_hand_computed_cases(a, b, expected):
    total = np.array([a], dtype=np.uint16)
    add_bf16_(total, np.array([b], dtype=np.uint16))
    assert int(total[0]) == expected, f"{a:#06x} + {b:#06x} -> {int(total[0]):#06x}, expected {expected:#06x}"


def test_bf16_pairwise_sum_matches_torch():
    torch = pytest.importorskip("torch", reason="parity with torch.bfloat16 needs PyTorch")
    rng = np.random.default_rng(2)
    a, b = random_finite(rng, 3 * CHUNK + 5, np.uint16), random_finite(rng, 3 * CHUNK + 5, np.uint16)
    total = a.copy()
    add_bf16_(total, b)
    ta, tb = (torch.from_numpy(v.view(np.int16)).view(torch.bfloat16) for v in (a, b))
    np.testing.assert_array_equal(total, (ta + tb).view(torch.int16).numpy().view(np.uint16))


# ---------------------------------------------------------------------------------------------
# The 16-bit allreduces


def rank_values(rank, n):
    """Small integers in [-3, 3] that differ per rank: every partial sum is exact in 16 bits."""
    pattern = np.array([-3, -2, -1, 1, 2, 3], dtype=np.int64)
    return np.resize(np.roll(pattern, -3 * rank), n)


def encode(values, op):
    return values.astype(np.float16) if op == "sum_fp16" else float_to_bf16_bits(values.astype(np.float32))


def decode(buf, op):
    return buf.astype(np.float64) if op == "sum_fp16" else bf16_bits_to_float32(buf).astype(np.float64)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("op", ["sum_fp16", "sum_bf16"])
def test_16bit_allreduce_is_exact_on_small_integers_in_place(op, world):
    sizes = (0, 1, 7, 100_003)

    def body():
        comm, out = current_thread_communicator(), {}
        for n in sizes:
            buf = encode(rank_values(comm.rank, n), op)
            assert comm.allreduce(buf, op) is buf
            out[n] = buf
        return out

    for out in run(body, world):
        for n in sizes:
            expected = sum(rank_values(r, n) for r in range(world))
            assert out[n].dtype == encode(np.zeros(1), op).dtype
            np.testing.assert_array_equal(decode(out[n], op), expected)


def float32_sum_rounded_once(inputs, op):
    """Oracle: the 16-bit values widened by NumPy's own casts, added in rank order in float32,
    rounded once by NumPy's float16 cast (fp16) or PyTorch's bfloat16 cast (bf16)."""
    def wide(buf):
        return buf.astype(np.float32) if op == "sum_fp16" else (buf.astype(np.uint32) << 16).view(np.float32)

    total = wide(inputs[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for buf in inputs[1:]:
            total += wide(buf)
        if op == "sum_fp16":
            return total.astype(np.float16)
    torch = pytest.importorskip("torch", reason="the bfloat16 rounding oracle is PyTorch's")
    return torch.from_numpy(total).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


@pytest.mark.parametrize("op", ["sum_fp16", "sum_bf16"])
def test_16bit_allreduce_adds_in_float32_in_rank_order_and_rounds_once(op):
    world, n = 3, 3 * CHUNK + 17
    add = add_fp16_ if op == "sum_fp16" else add_bf16_
    inputs = [encode(np.random.default_rng(r).standard_normal(n) * 10.0 ** r, op) for r in range(world)]

    def body():
        comm = current_thread_communicator()
        return comm.allreduce(inputs[comm.rank].copy(), op)

    expected = float32_sum_rounded_once(inputs, op)
    pairwise = inputs[0].copy()
    for buf in inputs[1:]:
        add(pairwise, buf)
    for out in run(body, world):
        np.testing.assert_array_equal(out.view(np.uint16), expected.view(np.uint16))
    assert not np.array_equal(expected, pairwise), "data too easy: rounding once never differed"


@pytest.mark.parametrize("op", ["sum_fp16", "sum_bf16"])
@pytest.mark.parametrize("rows", [1, 2, 4])
def test_sum_rows_16_matches_the_float32_oracle_across_chunks(op, rows):
    rng = np.random.default_rng(rows)
    dtype = np.float16 if op == "sum_fp16" else np.uint16
    inputs = [random_finite(rng, 2 * CHUNK + 3, dtype) for _ in range(rows)]
    out = np.empty_like(inputs[0])
    sum_rows_16(np.stack(inputs), op, out)
    np.testing.assert_array_equal(out.view(np.uint16), float32_sum_rounded_once(inputs, op).view(np.uint16))


def test_16bit_allreduce_rejects_the_wrong_dtype_with_advice():
    comm = LocalCommunicator()
    with pytest.raises(TypeError, match="takes a float16 buffer, got float32"):
        comm.allreduce(np.zeros(3, np.float32), "sum_fp16")
    with pytest.raises(TypeError, match="takes a uint16 buffer, got float16.*float_to_bf16_bits"):
        comm.allreduce(np.zeros(3, np.float16), "sum_bf16")
    with pytest.raises(ValueError, match="sum_bf16"):
        comm.allreduce(np.zeros(3, np.float32), "avg")


def test_float16_sums_accumulate_in_float32_and_round_once():
    # 2048 + 1 + 1: rounding each partial sum to fp16 would lose both ones, one rounding keeps them.
    def body():
        comm = current_thread_communicator()
        value = np.float16(2048 if comm.rank == 0 else 1)
        plain, sixteen = np.array([value]), np.array([value])
        comm.allreduce(plain, "sum")
        comm.allreduce(sixteen, "sum_fp16")
        return float(plain[0]), float(sixteen[0])

    assert run(body, 3)[0] == (2050.0, 2050.0)


# ---------------------------------------------------------------------------------------------
# DDP with hooks

IN, HIDDEN, OUT, BATCH, STEPS = 8, 32, 4, 6, 5


def make_model():
    ddpgrad.manual_seed(5)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                         nn.Linear(HIDDEN, OUT))


def batch(rank, step):
    rng = np.random.default_rng(100 * step + rank)
    return (ddpgrad.tensor(rng.standard_normal((BATCH, IN)).astype(np.float32)),
            ddpgrad.tensor(rng.standard_normal((BATCH, OUT)).astype(np.float32)))


def flat(tensors):
    return np.concatenate([t.detach().numpy().ravel() for t in tensors])


def train(hook, steps=STEPS):
    """SGD on this rank's batches; the first step's averaged gradient and the final parameters."""
    rank = dist.get_rank()
    model = make_model()
    ddp = DDP(model, bucket_cap_mb=0.002)
    if hook is not None:
        ddp.register_comm_hook(None, hook)
    opt = optim.SGD(ddp.parameters(), lr=0.1)
    first_grad = None
    for step in range(steps):
        opt.zero_grad()
        x, y = batch(rank, step)
        ((ddp(x) - y) ** 2).mean().backward()
        if first_grad is None:
            first_grad = flat(p.grad for p in model.parameters())
        opt.step()
    return {"grad": first_grad, "params": flat(model.parameters()), "buckets": len(ddp.reducer.buckets)}


def relative_error(got, reference):
    return float(np.linalg.norm(got - reference) / np.linalg.norm(reference))


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("kind", ["fp16", "bf16"])
def test_compressed_gradient_is_16_bit_and_within_16_bit_rounding_of_the_mean(kind, world):
    reference = run(train, world, None)[0]
    results = run(train, world, HOOKS[kind])
    assert results[0]["buckets"] >= 3, "a small bucket cap should give several buckets"
    grad = results[0]["grad"]
    for r in results[1:]:
        np.testing.assert_array_equal(r["grad"], grad)  # every rank: the same bits
        np.testing.assert_array_equal(r["params"], results[0]["params"])
    if kind == "fp16":
        np.testing.assert_array_equal(grad.astype(np.float16).astype(np.float32), grad)
    else:
        assert not (grad.view(np.uint32) & 0xFFFF).any(), "bf16 values have zero low 16 bits"
    u = UNIT_ROUNDOFF[kind]
    error = relative_error(grad, reference["grad"])
    # each element: rounded once when compressed, once per partial sum: about u on average
    assert u / 100 < error < 2 * u, f"{kind}: gradient relative error {error:.3g}, unit roundoff {u:.3g}"


@pytest.mark.parametrize("kind", ["fp16", "bf16"])
def test_training_with_compression_stays_close_to_uncompressed(kind):
    initial = flat(make_model().parameters())
    reference = run(train, 3, None)[0]["params"] - initial
    update = run(train, 3, HOOKS[kind])[0]["params"] - initial
    error = relative_error(update, reference)
    assert error < 2 * UNIT_ROUNDOFF[kind], f"{kind}: {STEPS}-step update off by {error:.3g}"


def test_allreduce_hook_matches_default_averaging():
    reference = run(train, 3, None)
    results = run(train, 3, default_hooks.allreduce_hook)
    for got, ref in zip(results, reference):
        np.testing.assert_allclose(got["grad"], ref["grad"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got["params"], ref["params"], rtol=1e-5, atol=1e-7)


def test_hook_sees_each_bucket_local_gradient_before_averaging():
    def body():
        model = make_model()
        ddp = DDP(model, bucket_cap_mb=0.002)
        seen = []

        def spy(state, bucket):
            buffer, params = bucket.buffer(), bucket.parameters()
            state.append({"index": bucket.index(), "buffer": buffer, "local": buffer.copy(),
                          "last": bucket.is_last(), "params": params,
                          "views": [np.shares_memory(p.grad.numpy(), buffer) for p in params],
                          "is_reducer_buffer": buffer is ddp.reducer.buckets[bucket.index()].buffer,
                          "members": len(ddp.reducer.buckets[bucket.index()].members)})
            return default_hooks.allreduce_hook(None, bucket)

        ddp.register_comm_hook(seen, spy)
        x, y = batch(dist.get_rank(), 0)
        ((ddp(x) - y) ** 2).mean().backward()
        return {
            "indices": [s["index"] for s in seen],
            "is_reducer_buffer": [s["is_reducer_buffer"] for s in seen],
            "last": [s["last"] for s in seen],
            "params_are_views": [all(s["views"]) and len(s["params"]) == s["members"] for s in seen],
            "local": [s["local"] for s in seen],
            "averaged": [s["buffer"].copy() for s in seen],
        }

    results = run(body, 3)
    count = len(results[0]["indices"])
    assert count >= 3
    for r in results:
        assert r["indices"] == list(range(count))
        assert all(r["is_reducer_buffer"]) and all(r["params_are_views"])
        assert r["last"] == [False] * (count - 1) + [True]
    for b in range(count):
        locals_ = [r["local"][b] for r in results]
        assert not np.array_equal(locals_[0], locals_[1]), "the hook must see this rank's own gradient"
        np.testing.assert_allclose(results[0]["averaged"][b], np.mean(locals_, axis=0), rtol=1e-5, atol=1e-7)


def test_register_comm_hook_twice_errors():
    def body():
        ddp = DDP(make_model())
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        with pytest.raises(RuntimeError, match="only be called once"):
            ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)
        return True

    assert run(body, 2) == [True, True]


def _backward_error(hook):
    ddp = DDP(make_model())
    ddp.register_comm_hook(None, hook)
    x, y = batch(dist.get_rank(), 0)
    try:
        ((ddp(x) - y) ** 2).mean().backward()
    except (TypeError, RuntimeError) as exc:
        return str(exc)
    return None


def test_hook_that_returns_no_handle_errors_with_advice():
    def forgot_return(state, bucket):
        default_hooks.allreduce_hook(state, bucket).wait()

    message = run(_backward_error, 1, forgot_return)[0]
    assert message is not None and "'forgot_return' returned NoneType" in message and "wait()" in message


def test_hook_result_of_the_wrong_shape_errors_with_shapes():
    class Scalar:
        def test(self):
            return True

        def wait(self, timeout=None):
            return np.float32(0)

    message = run(_backward_error, 1, lambda state, bucket: Scalar())[0]
    assert message is not None and "shape ()" in message and "buffer has shape" in message, message


def test_fp16_hook_divides_before_summing_so_a_large_mean_does_not_overflow():
    # Each of 4 ranks has gradient 40000: their sum (160000) overflows float16, their mean does not.
    def body():
        layer = nn.Linear(1, 1, bias=False)
        ddp = DDP(layer)
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        (ddp(ddpgrad.ones(1, 1)) * 40000.0).sum().backward()
        return float(layer.weight.grad.numpy()[0, 0])

    assert run(body, 4) == [40000.0] * 4


def test_hooks_run_and_round_in_a_world_of_one():
    def body(kind):
        exact = train(None, steps=1)["grad"]
        return exact, train(HOOKS[kind], steps=1)["grad"]

    exact, grad = run(body, 1, "fp16")[0]
    np.testing.assert_array_equal(grad, exact.astype(np.float16).astype(np.float32))
    exact, grad = run(body, 1, "bf16")[0]
    np.testing.assert_array_equal(grad, bf16_bits_to_float32(float_to_bf16_bits(exact)))


def test_example_trains_with_compress_option():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    import train_mlp

    args = ["--synthetic", "240", "--epochs", "2", "--hidden", "16", "--batch-size", "16", "--lr", "0.01", "--quiet"]
    for kind in ("none", "fp16", "bf16"):
        summary = run(train_mlp.main, 2, [*args, "--compress", kind])[0]
        assert summary["val_acc"] > 0.5, (kind, summary)
