"""Small parts of PyTorch's surface that scripts use: keyword names, import paths, defaults, formatting."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ddpgrad
from op_helpers import TORCH_REASON

torch = pytest.importorskip("torch", reason=TORCH_REASON)


@pytest.mark.parametrize("call", [
    lambda lib, a, b: lib.matmul(input=a, other=b),
    lambda lib, a, b: lib.add(input=a, other=b, alpha=2),
    lambda lib, a, b: lib.mul(a, other=b),
    lambda lib, a, b: lib.pow(a.abs(), exponent=2),
    lambda lib, a, b: lib.where(condition=a > 0, input=a, other=b),
    lambda lib, a, b: lib.sum(input=a, dim=1, keepdim=True),
    lambda lib, a, b: lib.clamp(a, min=-0.5, max=0.5),
    lambda lib, a, b: lib.cat(tensors=[a, b], dim=0),
    lambda lib, a, b: a.div(other=b, rounding_mode="floor"),
    lambda lib, a, b: lib.div(a * 3, b, rounding_mode="trunc"),
    lambda lib, a, b: lib.maximum(input=a, other=b),
])
def test_pytorch_keyword_names_work(call):
    values = np.linspace(-2, 2, 9).reshape(3, 3)
    expected = call(torch, torch.tensor(values), torch.tensor(values.T + 0.25))
    got = call(ddpgrad, ddpgrad.tensor(values), ddpgrad.tensor(values.T + 0.25))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12)


def test_import_paths_are_attributes_after_import_ddpgrad_as_torch():
    script = (
        "import sys\n"
        "import ddpgrad as torch\n"
        "assert torch.distributed.is_available()\n"
        "assert 'mpi4py' not in sys.modules, 'torch.distributed must not import mpi4py'\n"
        "assert torch.nn.parallel.DistributedDataParallel.__name__ == 'DistributedDataParallel'\n"
        "assert torch.utils.data.DataLoader and torch.optim.SGD and torch.nn.functional.relu\n"
        "assert torch.backends.mps.is_available() is False\n"
        "assert torch.backends.cuda.is_available() == torch.cuda.is_available()\n"
        "assert torch.linalg.vector_norm\n"
        "assert 'mpi4py' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_an_unknown_attribute_still_raises():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ddpgrad.nonexistent  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ddpgrad.nn.nonexistent  # noqa: B018


def test_format_spec_on_a_0d_tensor_formats_its_value():
    for lib in (torch, ddpgrad):
        loss = lib.tensor(3.14159)
        assert f"{loss:.3f} {loss:>8.1f}" == "3.142      3.1"
        with pytest.raises(TypeError):
            format(lib.ones(2), ".2f")
    assert f"{ddpgrad.ones(2)}" == str(ddpgrad.ones(2))


def test_grad_fn_name_is_a_method_with_torchs_names():
    w = ddpgrad.ones(2, requires_grad=True)
    tw = torch.ones(2, requires_grad=True)
    assert (w * 2).grad_fn.name() == (tw * 2).grad_fn.name() == "MulBackward0"
    assert (w.exp()).grad_fn.name() == (tw.exp()).grad_fn.name()


def test_set_default_device_is_used_by_factories():
    ddpgrad.set_default_device("cpu")
    try:
        assert ddpgrad.get_default_device() == ddpgrad.device("cpu")
        assert ddpgrad.zeros(2).device == ddpgrad.device("cpu")
    finally:
        ddpgrad.set_default_device(None)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        ddpgrad.set_default_device("tpu")


def test_norms_match_torch():
    values = np.linspace(-2, 3, 12).reshape(3, 4)
    for name, call in {
        "Tensor.norm": lambda lib, x: x.norm(),
        "norm p=1 dim": lambda lib, x: x.norm(p=1, dim=1),
        "linalg.norm": lambda lib, x: lib.linalg.norm(x),
        "linalg.norm ord inf vector": lambda lib, x: lib.linalg.norm(x[0], ord=float("inf")),
        "linalg.vector_norm": lambda lib, x: lib.linalg.vector_norm(x, ord=3, dim=0, keepdim=True),
        "linalg.matrix_norm": lambda lib, x: lib.linalg.matrix_norm(x),
    }.items():
        expected = call(torch, torch.tensor(values))
        got = call(ddpgrad, ddpgrad.tensor(values))
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12, err_msg=name)


def test_load_map_location_accepts_torchs_forms(tmp_path):
    path = tmp_path / "ckpt.npz"
    ddpgrad.save({"w": ddpgrad.arange(3.0)}, path)
    for where in ("cpu", ddpgrad.device("cpu"), {"cuda:0": "cpu"}, {"cpu": "cpu"},
                  lambda storage, location: storage, lambda storage, location: None):
        loaded = ddpgrad.load(path, map_location=where)
        assert loaded["w"].tolist() == [0.0, 1.0, 2.0] and loaded["w"].device == ddpgrad.device("cpu")
    seen = []
    ddpgrad.load(path, map_location=lambda storage, location: seen.append(location))
    assert seen == ["cpu"]


def test_out_argument_writes_into_the_given_tensor_like_torch():
    for lib in (torch, ddpgrad):
        x = lib.tensor(np.arange(6.0).reshape(2, 3))
        target = lib.empty(2, 3, dtype=lib.float64)
        alias = target[0]
        assert lib.add(x, 1, out=target) is target and lib.mul(x, x, out=target) is target
        assert alias.tolist() == [0.0, 1.0, 4.0]
        resized = lib.empty(0, dtype=lib.float64)
        lib.sin(x, out=resized)
        assert tuple(resized.shape) == (2, 3)
        joined = lib.empty(0, dtype=lib.float64)
        lib.cat([x, x], dim=0, out=joined)
        assert tuple(joined.shape) == (4, 3)
        w = lib.ones(2, requires_grad=True)
        with pytest.raises(RuntimeError, match="out=... arguments don't support automatic differentiation"):
            lib.mul(w, 2, out=lib.empty(2))


def test_grad_fn_next_functions_walk_the_graph_like_torch():
    names = []
    for lib in (torch, ddpgrad):
        w = lib.ones(2, requires_grad=True)
        loss = ((w * 2).exp()).sum()
        node = loss.grad_fn
        seen = []
        while node is not None:
            seen.append(node.name())
            node = node.next_functions[0][0] if node.next_functions else None
        names.append(seen)
    assert names[0] == names[1]


def test_legacy_tensor_constructor_gives_the_default_float_dtype():
    for data in ([1, 2], [True], np.array([3, 4]), [[1.5]]):
        assert ddpgrad.Tensor(data).dtype.name == str(torch.Tensor(data).dtype).split(".")[-1]


def test_custom_function_sees_needs_input_grad_like_torch():
    seen = {}

    def make(lib):
        class Scale(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, y):
                ctx.save_for_backward(x, y)
                return x * y

            @staticmethod
            def backward(ctx, grad):
                x, y = ctx.saved_tensors
                seen[lib.__name__] = tuple(ctx.needs_input_grad)
                return (grad * y if ctx.needs_input_grad[0] else None), (grad * x if ctx.needs_input_grad[1] else None)

        return Scale

    for lib in (torch, ddpgrad):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        y = lib.tensor([3.0, 4.0])
        make(lib).apply(x, y).sum().backward()
        assert x.grad.tolist() == [3.0, 4.0]
    assert seen["torch"] == seen["ddpgrad"] == (True, False)
