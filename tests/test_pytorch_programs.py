"""PyTorch programs, in the style of the official tutorials, run with only their import lines changed.

Each program below is source text written for PyTorch. It runs twice: as written, on PyTorch, and
with its ``import torch...`` / ``from torch...`` lines pointed at ddpgrad. Initial values come from
one NumPy generator on both sides (the random streams of the two libraries differ), and every
program records what it computed in ``RESULTS``; the two runs must agree.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest

from op_helpers import TORCH_REASON

pytest.importorskip("torch", reason=TORCH_REASON)

FLOAT32_RTOL = 2e-4  # float32 programs: the two libraries sum in different orders
FLOAT32_ATOL = 1e-5


def _for_ddpgrad(source):
    """Only the import lines change: ``import torch`` becomes ``import ddpgrad as torch``, and so on."""
    out = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("import torch") and " as " not in stripped:
            line = line.replace("import torch", "import ddpgrad as torch", 1)
        elif stripped.startswith(("import torch", "from torch")):
            line = re.sub(r"\btorch\b", "ddpgrad", line)
        out.append(line)
    return "\n".join(out)


def _run(source, library):
    code = textwrap.dedent(source)
    if library == "ddpgrad":
        code = _for_ddpgrad(code)
    namespace = {"RESULTS": {}, "__name__": f"program_on_{library}"}
    exec(compile(code, f"<program on {library}>", "exec"), namespace)  # noqa: S102 - our own source
    return namespace["RESULTS"]


def _as_array(value):
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def _assert_same_results(source, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL):
    theirs, ours = _run(source, "torch"), _run(source, "ddpgrad")
    assert theirs.keys() == ours.keys() and theirs
    for key in theirs:
        t, o = theirs[key], ours[key]
        if isinstance(t, (str, bool)) or t is None:
            assert o == t, f"{key}: {o!r}, PyTorch {t!r}"
            continue
        t, o = _as_array(t), _as_array(o)
        assert o.shape == t.shape, f"{key}: shape {o.shape}, PyTorch {t.shape}"
        assert o.dtype == t.dtype, f"{key}: dtype {o.dtype}, PyTorch {t.dtype}"
        np.testing.assert_allclose(o, t, rtol=rtol, atol=atol, err_msg=key)


TENSOR_POLYNOMIAL = """
import math
import numpy as np
import torch

dtype = torch.float
device = torch.device("cpu")
rng = np.random.default_rng(0)

x = torch.linspace(-math.pi, math.pi, 2000, device=device, dtype=dtype)
y = torch.sin(x)

a, b, c, d = (torch.tensor(v, device=device, dtype=dtype) for v in rng.standard_normal(4))

learning_rate = 1e-6
losses = []
for t in range(300):
    y_pred = a + b * x + c * x ** 2 + d * x ** 3
    loss = (y_pred - y).pow(2).sum().item()
    if t % 100 == 99:
        losses.append(loss)

    grad_y_pred = 2.0 * (y_pred - y)
    grad_a = grad_y_pred.sum()
    grad_b = (grad_y_pred * x).sum()
    grad_c = (grad_y_pred * x ** 2).sum()
    grad_d = (grad_y_pred * x ** 3).sum()

    a -= learning_rate * grad_a
    b -= learning_rate * grad_b
    c -= learning_rate * grad_c
    d -= learning_rate * grad_d

RESULTS["losses"] = losses
RESULTS["coefficients"] = torch.stack([a, b, c, d])
RESULTS["summary"] = f"Result: y = {a.item():.2f} + {b.item():.2f} x + {c.item():.2f} x^2 + {d.item():.2f} x^3"
"""

AUTOGRAD_POLYNOMIAL = """
import math
import numpy as np
import torch

dtype = torch.float
rng = np.random.default_rng(1)
x = torch.linspace(-math.pi, math.pi, 2000, dtype=dtype)
y = torch.sin(x)

a, b, c, d = (torch.tensor(v, dtype=dtype, requires_grad=True) for v in rng.standard_normal(4))

learning_rate = 1e-6
losses = []
for t in range(300):
    y_pred = a + b * x + c * x ** 2 + d * x ** 3
    loss = (y_pred - y).pow(2).sum()
    if t % 100 == 99:
        losses.append(loss.item())
    loss.backward()

    with torch.no_grad():
        a -= learning_rate * a.grad
        b -= learning_rate * b.grad
        c -= learning_rate * c.grad
        d -= learning_rate * d.grad

        a.grad = None
        b.grad = None
        c.grad.zero_()
        d.grad.zero_()

RESULTS["losses"] = losses
RESULTS["coefficients"] = torch.stack([a, b, c, d]).detach()
RESULTS["still_leaves"] = all(t.is_leaf and t.requires_grad for t in (a, b, c, d))
"""

CUSTOM_FUNCTION = """
import math
import numpy as np
import torch


class LegendrePolynomial3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return 0.5 * (5 * input ** 3 - 3 * input)

    @staticmethod
    def backward(ctx, grad_output):
        input, = ctx.saved_tensors
        return grad_output * 1.5 * (5 * input ** 2 - 1)


dtype = torch.float
x = torch.linspace(-math.pi, math.pi, 2000, dtype=dtype)
y = torch.sin(x)

a = torch.full((), 0.0, dtype=dtype, requires_grad=True)
b = torch.full((), -1.0, dtype=dtype, requires_grad=True)
c = torch.full((), 0.0, dtype=dtype, requires_grad=True)
d = torch.full((), 0.3, dtype=dtype, requires_grad=True)

learning_rate = 5e-6
losses = []
for t in range(200):
    P3 = LegendrePolynomial3.apply
    y_pred = a + b * P3(c + d * x)
    loss = (y_pred - y).pow(2).sum()
    if t % 50 == 49:
        losses.append(loss.item())
    loss.backward()
    with torch.no_grad():
        for p in (a, b, c, d):
            p -= learning_rate * p.grad
            p.grad = None

RESULTS["losses"] = losses
RESULTS["coefficients"] = torch.stack([a, b, c, d]).detach()
"""

NN_SEQUENTIAL = """
import math
import numpy as np
import torch

rng = np.random.default_rng(2)
x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)

p = torch.tensor([1, 2, 3])
xx = x.unsqueeze(-1).pow(p)

model = torch.nn.Sequential(
    torch.nn.Linear(3, 1),
    torch.nn.Flatten(0, 1)
)
with torch.no_grad():
    for param in model.parameters():
        param.copy_(torch.tensor(rng.standard_normal(tuple(param.shape)) * 0.1))

loss_fn = torch.nn.MSELoss(reduction='sum')

learning_rate = 1e-6
losses = []
for t in range(300):
    y_pred = model(xx)
    loss = loss_fn(y_pred, y)
    if t % 100 == 99:
        losses.append(loss.item())
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= learning_rate * param.grad

linear_layer = model[0]
RESULTS["losses"] = losses
RESULTS["weight"] = linear_layer.weight
RESULTS["bias"] = linear_layer.bias
RESULTS["xx_dtype"] = str(xx.dtype).split(".")[-1]
"""

NN_OPTIM = """
import math
import numpy as np
import torch

rng = np.random.default_rng(3)
x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)
p = torch.tensor([1, 2, 3])
xx = x.unsqueeze(-1).pow(p)

model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
with torch.no_grad():
    for param in model.parameters():
        param.copy_(torch.tensor(rng.standard_normal(tuple(param.shape)) * 0.1))
loss_fn = torch.nn.MSELoss(reduction='sum')

learning_rate = 1e-3
optimizer = torch.optim.RMSprop(model.parameters(), lr=learning_rate)
losses = []
for t in range(300):
    y_pred = model(xx)
    loss = loss_fn(y_pred, y)
    if t % 100 == 99:
        losses.append(loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

RESULTS["losses"] = losses
RESULTS["weight"] = model[0].weight
RESULTS["bias"] = model[0].bias
"""

CUSTOM_MODULE = """
import math
import numpy as np
import torch


class Polynomial3(torch.nn.Module):
    def __init__(self, init):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(init[0]))
        self.b = torch.nn.Parameter(torch.tensor(init[1]))
        self.c = torch.nn.Parameter(torch.tensor(init[2]))
        self.d = torch.nn.Parameter(torch.tensor(init[3]))

    def forward(self, x):
        return self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3

    def string(self):
        return f'y = {self.a.item():.3f} + {self.b.item():.3f} x + {self.c.item():.3f} x^2 + {self.d.item():.3f} x^3'


rng = np.random.default_rng(4)
x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)
model = Polynomial3(rng.standard_normal(4).astype(np.float32))

criterion = torch.nn.MSELoss(reduction='sum')
optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
losses = []
for t in range(300):
    y_pred = model(x)
    loss = criterion(y_pred, y)
    if t % 100 == 99:
        losses.append(loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

RESULTS["losses"] = losses
RESULTS["summary"] = model.string()
RESULTS["names"] = ",".join(name for name, _ in model.named_parameters())
"""

DYNAMIC_NET = """
import math
import random
import numpy as np
import torch


class DynamicNet(torch.nn.Module):
    def __init__(self, init):
        super().__init__()
        self.a, self.b, self.c, self.d, self.e = (torch.nn.Parameter(torch.tensor(v)) for v in init)

    def forward(self, x):
        y = self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3
        for exp in range(4, random.randint(4, 6)):
            y = y + self.e * x ** exp
        return y


random.seed(0)
rng = np.random.default_rng(5)
x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)
model = DynamicNet((rng.standard_normal(5) * 0.1).astype(np.float32))
criterion = torch.nn.MSELoss(reduction='sum')
optimizer = torch.optim.SGD(model.parameters(), lr=1e-8, momentum=0.9)
losses = []
for t in range(200):
    y_pred = model(x)
    loss = criterion(y_pred, y)
    if t % 50 == 49:
        losses.append(loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

RESULTS["losses"] = losses
RESULTS["params"] = torch.stack([p.detach() for p in model.parameters()])
"""

AUTOGRAD_TUTORIAL = """
import numpy as np
import torch

rng = np.random.default_rng(6)
x = torch.ones(5)
y = torch.zeros(3)
w = torch.tensor(rng.standard_normal((5, 3)).astype(np.float32), requires_grad=True)
b = torch.tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
z = torch.matmul(x, w) + b
loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)

RESULTS["z_has_grad_fn"] = z.grad_fn is not None
RESULTS["loss_has_grad_fn"] = loss.grad_fn is not None

loss.backward()
RESULTS["w_grad"] = w.grad
RESULTS["b_grad"] = b.grad

z = torch.matmul(x, w) + b
RESULTS["requires_grad"] = z.requires_grad
with torch.no_grad():
    z = torch.matmul(x, w) + b
RESULTS["requires_grad_no_grad"] = z.requires_grad
z = torch.matmul(x, w) + b
z_det = z.detach()
RESULTS["requires_grad_detached"] = z_det.requires_grad

inp = torch.eye(4, 5, requires_grad=True)
out = (inp + 1).pow(2).t()
out.backward(torch.ones_like(out), retain_graph=True)
RESULTS["first_call"] = inp.grad.clone()
out.backward(torch.ones_like(out), retain_graph=True)
RESULTS["second_call"] = inp.grad.clone()
inp.grad.zero_()
out.backward(torch.ones_like(out), retain_graph=True)
RESULTS["call_after_zeroing"] = inp.grad
"""

TENSORS_TUTORIAL = """
import numpy as np
import torch

data = [[1, 2], [3, 4]]
x_data = torch.tensor(data)
np_array = np.array(data)
x_np = torch.from_numpy(np_array)
x_ones = torch.ones_like(x_data)
x_rand = torch.rand_like(x_data, dtype=torch.float)
RESULTS["x_ones"] = x_ones
RESULTS["rand_shape"] = str(tuple(x_rand.shape))

shape = (2, 3,)
RESULTS["zeros"] = torch.zeros(shape)
tensor = torch.ones(4, 4)
RESULTS["attributes"] = f"{tuple(tensor.shape)} {str(tensor.dtype).split('.')[-1]} {tensor.device}"
RESULTS["first_row"] = tensor[0]
RESULTS["first_column"] = tensor[:, 0]
RESULTS["last_column"] = tensor[..., -1]
tensor[:, 1] = 0
RESULTS["tensor"] = tensor
t1 = torch.cat([tensor, tensor, tensor], dim=1)
RESULTS["cat"] = t1

y1 = tensor @ tensor.T
y2 = tensor.matmul(tensor.T)
y3 = torch.rand_like(y1)
z1 = tensor * tensor
z2 = tensor.mul(tensor)
RESULTS["matmul"] = y1
RESULTS["matmul_method"] = y2
RESULTS["mul"] = z1 + z2

agg = tensor.sum()
agg_item = agg.item()
RESULTS["agg_item"] = agg_item
RESULTS["agg_type"] = type(agg_item).__name__

tensor.add_(5)
RESULTS["added_in_place"] = tensor

t = torch.ones(5)
n = t.numpy()
t.add_(1)
RESULTS["numpy_sees_add"] = n.copy()
n = np.ones(5)
t = torch.from_numpy(n)
np.add(n, 1, out=n)
RESULTS["tensor_sees_numpy_add"] = t
RESULTS["x_np"] = x_np
"""

CLASSIFIER = """
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

rng = np.random.default_rng(7)
features = rng.standard_normal((96, 1, 4, 4)).astype(np.float32)
labels = rng.integers(0, 3, 96)
train_data = TensorDataset(torch.tensor(features), torch.tensor(labels))
train_dataloader = DataLoader(train_data, batch_size=32)


class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(16, 24),
            nn.ReLU(),
            nn.Linear(24, 24),
            nn.SiLU(),
            nn.Linear(24, 3),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


model = NeuralNetwork()
with torch.no_grad():
    for param in model.parameters():
        param.copy_(torch.tensor(rng.standard_normal(tuple(param.shape)) * 0.3))

loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
losses = []
for epoch in range(3):
    model.train()
    for batch, (X, y) in enumerate(train_dataloader):
        pred = model(X)
        loss = loss_fn(pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())

model.eval()
correct = 0
with torch.no_grad():
    for X, y in train_dataloader:
        pred = model(X)
        correct += (pred.argmax(1) == y).type(torch.float).sum().item()
RESULTS["losses"] = losses
RESULTS["correct"] = correct
RESULTS["first_weight"] = model.linear_relu_stack[0].weight
"""

PROGRAMS = {
    "tensor_polynomial": TENSOR_POLYNOMIAL,
    "autograd_polynomial": AUTOGRAD_POLYNOMIAL,
    "custom_autograd_function": CUSTOM_FUNCTION,
    "nn_sequential_hand_update": NN_SEQUENTIAL,
    "nn_optim_rmsprop": NN_OPTIM,
    "custom_module": CUSTOM_MODULE,
    "dynamic_net": DYNAMIC_NET,
    "autograd_tutorial": AUTOGRAD_TUTORIAL,
    "tensors_tutorial": TENSORS_TUTORIAL,
    "classifier_with_dataloader": CLASSIFIER,
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_program_gives_pytorchs_results(name):
    _assert_same_results(PROGRAMS[name])


def test_only_import_lines_change():
    for source in PROGRAMS.values():
        before, after = source.splitlines(), _for_ddpgrad(source).splitlines()
        changed = [a for a, b in zip(before, after) if a != b]
        assert changed and all(line.lstrip().startswith(("import", "from")) for line in changed)


def test_a_slightly_different_program_would_be_caught():
    theirs = _run(AUTOGRAD_POLYNOMIAL, "torch")
    ours = _run(AUTOGRAD_POLYNOMIAL.replace("learning_rate = 1e-6", "learning_rate = 1.01e-6"), "ddpgrad")
    assert not np.allclose(_as_array(ours["coefficients"]), _as_array(theirs["coefficients"]),
                           rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_the_out_of_place_update_fails_on_both_as_the_tutorial_warns():
    broken = AUTOGRAD_POLYNOMIAL.replace("a -= learning_rate * a.grad", "a = a - learning_rate * a.grad")
    for library in ("torch", "ddpgrad"):
        with pytest.raises(TypeError):  # a is no longer a leaf: its .grad stays None
            _run(broken, library)
