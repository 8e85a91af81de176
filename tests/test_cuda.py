"""The CUDA device: every op, layer, loss, optimizer and DDP through CuPy, against the CPU run.

The CPU (NumPy) results are the oracle: the same code path runs on CuPy arrays, so outputs and
gradients must agree to float64 rounding. Skipped, with the reason, where no GPU is present.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import ddpgrad
import ddpgrad.nn as nn
import ddpgrad.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_importing_ddpgrad_never_imports_cupy():
    code = "import sys, ddpgrad, ddpgrad.nn, ddpgrad.distributed; ddpgrad.randn(3).exp(); print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    if ddpgrad.cuda.is_available():
        pytest.skip("a GPU is present: the error path is for machines without one")
    assert ddpgrad.cuda.device_count() == 0
    with pytest.raises(RuntimeError, match="cuda"):
        ddpgrad.zeros(2, device="cuda")


requires_gpu = pytest.mark.skipif(not ddpgrad.cuda.is_available(),
                                  reason="no CUDA GPU with CuPy here (pip install 'ddpgrad[gpu]' on a GPU machine)")

RNG = np.random.default_rng(0)


def _pair(*shapes, positive=False):
    arrays = [RNG.standard_normal(s) for s in shapes]
    if positive:
        arrays = [np.abs(a) + 0.5 for a in arrays]
    cpu = [ddpgrad.tensor(a, requires_grad=True) for a in arrays]
    gpu = [ddpgrad.tensor(a, device="cuda", requires_grad=True) for a in arrays]
    return cpu, gpu


OPS = {
    "add_broadcast": ((lambda a, b: a + b), [(3, 4), (4,)], False),
    "sub_mul_div": ((lambda a, b: (a - b) * a / (b * b + 1)), [(3, 4), (3, 4)], False),
    "pow": ((lambda a, b: a ** b), [(3, 4), (3, 4)], True),
    "matmul_batched": ((lambda a, b: a @ b), [(2, 3, 4), (4, 5)], False),
    "matmul_vec": ((lambda a, b: a @ b), [(4,), (4, 3)], False),
    "exp_log_sqrt": ((lambda a: (a.exp() + a.log() + a.sqrt())), [(5,)], True),
    "abs_tanh_sigmoid_relu": ((lambda a: a.abs() + a.tanh() + a.sigmoid() + a.relu()), [(3, 5)], False),
    "gelu": ((lambda a: F.gelu(a) + F.gelu(a, approximate="tanh")), [(4, 3)], False),
    "clamp_max_min": ((lambda a, b: a.clamp(-0.5, 0.5) + ddpgrad.maximum(a, b) + ddpgrad.minimum(a, b)), [(6,), (6,)], False),
    "where": ((lambda a, b: ddpgrad.where(a > 0, a, b)), [(3, 3), (3, 3)], False),
    "reductions": ((lambda a: a.sum(1) + a.mean(1) + a.var(1) + a.std(1) + a.amax(1) + a.logsumexp(1)), [(3, 6)], False),
    "max_dim": ((lambda a: a.max(1).values + a.min(0).values.sum()), [(4, 5)], False),
    "softmax_family": ((lambda a: a.softmax(1) * a.log_softmax(0)), [(3, 4)], False),
    "shapes": ((lambda a: a.reshape(6, 2).T.permute(1, 0).unsqueeze(0).squeeze(0).flatten().expand(2, 12)), [(3, 4)], False),
    "cat_stack": ((lambda a, b: ddpgrad.cat([a, b], 1).sum(0)[:3] + ddpgrad.stack([a, b]).sum((0, 1))), [(2, 3), (2, 3)], False),
    "indexing": ((lambda a: a[1:, ::2].sum() + a[ddpgrad.tensor([0, 0, 2], device=a.device)].sum(0)), [(3, 4)], False),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_cases_run_on_cpu(name):
    """The CUDA cases below are valid programs: checked on every machine, GPU or not."""
    fn, shapes, positive = OPS[name]
    cpu = [ddpgrad.tensor(np.abs(RNG.standard_normal(s)) + 0.5 if positive else RNG.standard_normal(s),
                          requires_grad=True) for s in shapes]
    fn(*cpu).sum().backward()
    assert all(t.grad is not None and t.grad.shape == t.shape for t in cpu)


@requires_gpu
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_forward_and_backward_on_cuda_match_cpu(name):
    fn, shapes, positive = OPS[name]
    cpu, gpu = _pair(*shapes, positive=positive)
    out_c, out_g = fn(*cpu), fn(*gpu)
    assert out_g.device == ddpgrad.device("cuda", 0)
    np.testing.assert_allclose(out_g.cpu().detach().numpy(), out_c.detach().numpy(), rtol=1e-10, atol=1e-12)
    seed = RNG.standard_normal(out_c.shape)
    out_c.backward(ddpgrad.tensor(seed))
    out_g.backward(ddpgrad.tensor(seed, device="cuda"))
    for tc, tg in zip(cpu, gpu):
        assert tg.grad.device.type == "cuda"
        np.testing.assert_allclose(tg.grad.cpu().numpy(), tc.grad.numpy(), rtol=1e-10, atol=1e-12)


@requires_gpu
def test_gradcheck_runs_on_cuda():
    _, (a, b) = _pair((3, 4), (4, 2))
    assert ddpgrad.autograd.gradcheck(lambda x, y: (x @ y).tanh(), [a, b])


@requires_gpu
def test_mixing_devices_is_a_clear_error():
    with pytest.raises(RuntimeError, match="same device"):
        ddpgrad.ones(3) + ddpgrad.ones(3, device="cuda")


@requires_gpu
def test_device_moves_and_attributes():
    t = ddpgrad.arange(6).reshape(2, 3).cuda()
    assert t.is_cuda and str(t.device) == "cuda:0"
    assert t.cpu().device == ddpgrad.device("cpu") and t.cpu().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert ddpgrad.zeros(2, 2, device="cuda").to("cpu").numpy().sum() == 0
    assert ddpgrad.cuda.device_count() >= 1
    ddpgrad.manual_seed(3)
    a = ddpgrad.randn(4, device="cuda").cpu().numpy()
    ddpgrad.manual_seed(3)
    b = ddpgrad.randn(4).numpy()
    np.testing.assert_array_equal(a, b)  # one seed, the same numbers on either device


def _layers():
    ddpgrad.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Dropout(0.0), nn.Linear(8, 4))


@requires_gpu
@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse", "l1", "bce", "nll"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
def test_training_steps_on_cuda_match_cpu(loss_name, opt_name):
    x = RNG.standard_normal((10, 6))
    labels = RNG.integers(0, 4, size=10)
    targets = RNG.standard_normal((10, 4))
    results = {}
    for device in ("cpu", "cuda"):
        model = _layers().double().to(device)
        opt = {"sgd": lambda p: ddpgrad.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
               "adam": lambda p: ddpgrad.optim.Adam(p, lr=0.01, amsgrad=True),
               "adamw": lambda p: ddpgrad.optim.AdamW(p, lr=0.01)}[opt_name](model.parameters())
        xt = ddpgrad.tensor(x, device=device)
        for _ in range(5):
            opt.zero_grad()
            out = model(xt)
            if loss_name == "cross_entropy":
                loss = F.cross_entropy(out, ddpgrad.tensor(labels, device=device), label_smoothing=0.1)
            elif loss_name == "nll":
                loss = F.nll_loss(F.log_softmax(out, 1), ddpgrad.tensor(labels, device=device))
            elif loss_name == "mse":
                loss = F.mse_loss(out, ddpgrad.tensor(targets, device=device))
            elif loss_name == "l1":
                loss = F.l1_loss(out, ddpgrad.tensor(targets, device=device))
            else:
                loss = F.binary_cross_entropy_with_logits(out, ddpgrad.tensor((targets > 0) * 1.0, device=device))
            loss.backward()
            opt.step()
        results[device] = {n: p.detach().cpu().numpy() for n, p in model.named_parameters()}
    for name, value in results["cpu"].items():
        np.testing.assert_allclose(results["cuda"][name], value, rtol=1e-9, atol=1e-12, err_msg=name)


@requires_gpu
@pytest.mark.parametrize("world", [1, 2])
def test_ddp_with_gpu_gradients_matches_single_process(world):
    import ddp_cases
    from ddpgrad.distributed import launch_threads

    results = launch_threads(ddp_cases.scenario_matches_single_process, world,
                             args=("mlp", "adam", 4, 1, 0.0003, "cuda"), timeout=120)
    assert all(r["mismatches"] == [] for r in results), results


@requires_gpu
def test_example_trains_on_cuda_in_one_process():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "examples/train_mlp.py", "--device", "cuda", "--epochs", "8",
                          "--quiet", "--lr", "3e-3"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    acc = float(out.stdout.split("val_acc=")[-1])
    assert acc > 0.9, out.stdout[-2000:]


def _train_with_hook(kind, device):
    import ddpgrad.distributed as dist
    from ddpgrad.distributed.algorithms.ddp_comm_hooks import default_hooks
    from ddpgrad.nn.parallel import DistributedDataParallel as DDP

    ddpgrad.manual_seed(5)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4)).to(device)
    ddp = DDP(model, bucket_cap_mb=0.002)
    if kind != "none":
        ddp.register_comm_hook(None, getattr(default_hooks, f"{kind}_compress_hook"))
    opt = ddpgrad.optim.SGD(ddp.parameters(), lr=0.1)
    rng = np.random.default_rng(dist.get_rank())
    for _ in range(3):
        x = ddpgrad.tensor(rng.standard_normal((6, 8)).astype(np.float32), device=device)
        y = ddpgrad.tensor(rng.standard_normal((6, 4)).astype(np.float32), device=device)
        opt.zero_grad()
        ((ddp(x) - y) ** 2).mean().backward()
        opt.step()
    return np.concatenate([p.detach().cpu().numpy().ravel() for p in model.parameters()])


@requires_gpu
@pytest.mark.parametrize("kind", ["none", "fp16", "bf16"])
def test_comm_hooks_on_gpu_buckets_agree_with_cpu(kind):
    from ddpgrad.distributed import launch_threads

    gpu = launch_threads(_train_with_hook, 2, args=(kind, "cuda"), timeout=120)
    cpu = launch_threads(_train_with_hook, 2, args=(kind, "cpu"), timeout=120)
    np.testing.assert_array_equal(gpu[0], gpu[1])  # replicas identical
    unit = {"none": 1e-6, "fp16": 2 * 2.0**-11, "bf16": 2 * 2.0**-8}[kind]
    error = np.linalg.norm(gpu[0] - cpu[0]) / np.linalg.norm(cpu[0])
    assert error < unit, f"{kind}: GPU and CPU training differ by {error:.3g}"
