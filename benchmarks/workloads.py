"""The models the benchmarks train, built three ways from the same initial weights and data:
ddpgrad (what we measure), a hand-written NumPy step (the floor), and PyTorch (the reference).

The NumPy floor is as good as plain NumPy allows: every array is allocated once, matmuls and
elementwise ops write with ``out=``, parameters/gradients/momentum live in single flat buffers
(one ufunc call per update stage, one allreduce of all gradients, no copies), bias gradients are
a BLAS gemv, the loss gradient is scaled once, ReLU backward masks in place, and the SGD update
runs its four passes chunk by chunk so that each chunk stays in cache.
"""

from __future__ import annotations

import numpy as np

MLP_SIZES = (784, 1024, 1024, 10)
TINY_SIZES = (10, 20, 1)
LR = 0.01
MOMENTUM = 0.9
UPDATE_CHUNK = 65536
"""Elements per chunk of the floor's fused SGD update: 256 KB of float32, so the chunk of each
of the three arrays it touches stays in L2 across the four passes."""
N_BATCHES = 4
"""Distinct batches cycled through, with random labels: the loss stays high, no value drifts
towards denormals over hundreds of steps, and the data is the same for every candidate."""


def make_weights(sizes, seed=0, dtype=np.float32):
    """PyTorch's default Linear init (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), weight (out, in)."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(dtype)
        b = rng.uniform(-bound, bound, (fan_out,)).astype(dtype)
        layers.append((w, b))
    return layers


def make_classification_batches(batch, sizes=MLP_SIZES, n=N_BATCHES, seed=1, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, sizes[0]), dtype=np.float32).astype(dtype),
             rng.integers(0, sizes[-1], batch).astype(np.int64)) for _ in range(n)]


def make_regression_batches(batch, sizes=TINY_SIZES, n=N_BATCHES, seed=1, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, sizes[0])).astype(dtype),
             rng.standard_normal((batch, sizes[-1])).astype(dtype)) for _ in range(n)]


def n_params(sizes=MLP_SIZES):
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


class Cycle:
    """Hands out the batches in turn."""

    def __init__(self, batches):
        self.batches = batches
        self.i = 0

    def __call__(self):
        b = self.batches[self.i]
        self.i = (self.i + 1) % len(self.batches)
        return b


# --------------------------------------------------------------------------------- the floor
class NumpyMLP:
    """ReLU MLP + softmax cross-entropy (mean) + SGD(momentum) written by hand in NumPy.

    ``step(x, y)`` is one training step; ``allreduce(flat_grads)`` (optional) runs between backward
    and the update, on the single flat gradient buffer, and must leave the *sum* over ranks there:
    the division by the world size is folded into the loss-gradient scale for free.
    """

    def __init__(self, weights, batch, lr=LR, momentum=MOMENTUM, world_size=1, allreduce=None):
        dtype = weights[0][0].dtype
        sizes = [weights[0][0].shape[1]] + [w.shape[0] for w, _ in weights]
        total = sum(w.size + b.size for w, b in weights)
        self.params = np.empty(total, dtype)
        self.grads = np.empty(total, dtype)
        self.momentum_buf = np.zeros(total, dtype)  # 0.9 * 0 + g == g: PyTorch's first step
        self.W, self.b, self.gW, self.gb = [], [], [], []
        offset = 0
        for w, b in weights:
            for src, views, gviews in ((w, self.W, self.gW), (b, self.b, self.gb)):
                n = src.size
                view = self.params[offset:offset + n].reshape(src.shape)
                view[...] = src
                views.append(view)
                gviews.append(self.grads[offset:offset + n].reshape(src.shape))
                offset += n
        self.h = [np.empty((batch, n), dtype) for n in sizes[1:]]  # h[-1] holds the logits
        self.dh = [np.empty((batch, n), dtype) for n in sizes[1:-1]]
        self.mask = [np.empty((batch, n), np.bool_) for n in sizes[1:-1]]
        self.rowmax = np.empty((batch, 1), dtype)
        self.rowsum = np.empty((batch, 1), dtype)
        self.ones = np.ones(batch, dtype)
        self.rows = np.arange(batch)
        self.lr, self.momentum = lr, momentum
        self.scale = 1.0 / (batch * world_size)
        self.allreduce = allreduce
        self.loss = None

    def state(self):
        return [(w.copy(), b.copy()) for w, b in zip(self.W, self.b)]

    def step(self, x, y):
        self.forward(x, y)
        self.backward(x, y)
        if self.allreduce is not None:
            self.allreduce(self.grads)
        self.update()

    def forward(self, x, y):
        """Forward and loss; leaves d(loss)/d(logits) in ``h[-1]``."""
        W, b, h = self.W, self.b, self.h
        last = len(W) - 1
        inp = x
        for i in range(last + 1):
            np.matmul(inp, W[i].T, out=h[i])
            h[i] += b[i]
            if i < last:
                np.maximum(h[i], 0, out=h[i])
            inp = h[i]
        # softmax cross-entropy; h[last] becomes d(loss)/d(logits)
        z = h[last]
        np.max(z, axis=1, keepdims=True, out=self.rowmax)
        z -= self.rowmax
        picked = z[self.rows, y]
        np.exp(z, out=z)
        np.sum(z, axis=1, keepdims=True, out=self.rowsum)
        self.loss = float(np.log(self.rowsum).sum() - picked.sum()) / len(y)
        z /= self.rowsum
        z[self.rows, y] -= 1
        z *= self.scale

    def backward(self, x, y):
        """Every gradient, written into the flat ``grads`` buffer."""
        W, h = self.W, self.h
        last = len(W) - 1
        g = h[last]
        for i in range(last, -1, -1):
            a = h[i - 1] if i > 0 else x
            np.matmul(g.T, a, out=self.gW[i])
            np.matmul(self.ones, g, out=self.gb[i])
            if i > 0:
                d = self.dh[i - 1]
                np.matmul(g, W[i], out=d)
                np.greater(a, 0, out=self.mask[i - 1])
                np.multiply(d, self.mask[i - 1], out=d)
                g = d

    def update(self):
        """SGD with momentum in place: buf = m * buf + g; p -= lr * buf (grads are scratch now).

        All four passes run chunk by chunk, so each chunk stays in cache between them: about
        one trip to memory instead of four (measured ~30% faster than four whole-buffer passes).
        """
        buf, grads, params, m, lr = self.momentum_buf, self.grads, self.params, self.momentum, self.lr
        for i in range(0, params.size, UPDATE_CHUNK):
            b, g, p = buf[i:i + UPDATE_CHUNK], grads[i:i + UPDATE_CHUNK], params[i:i + UPDATE_CHUNK]
            np.multiply(b, m, out=b)
            np.add(b, g, out=b)
            np.multiply(b, lr, out=g)
            np.subtract(p, g, out=p)


class NumpyTiny:
    """Linear-ReLU-Linear + MSE + plain SGD by hand: the floor of the overhead-bound step."""

    def __init__(self, weights, batch, lr=LR):
        (self.W1, self.b1), (self.W2, self.b2) = [(w.copy(), b.copy()) for w, b in weights]
        dtype = self.W1.dtype
        self.h = np.empty((batch, self.W1.shape[0]), dtype)
        self.out = np.empty((batch, self.W2.shape[0]), dtype)
        self.dh = np.empty_like(self.h)
        self.mask = np.empty(self.h.shape, np.bool_)
        self.gW1, self.gb1 = np.empty_like(self.W1), np.empty_like(self.b1)
        self.gW2, self.gb2 = np.empty_like(self.W2), np.empty_like(self.b2)
        self.ones = np.ones(batch, dtype)
        self.lr = lr
        self.loss = None

    def step(self, x, t):
        np.matmul(x, self.W1.T, out=self.h)
        self.h += self.b1
        np.maximum(self.h, 0, out=self.h)
        np.matmul(self.h, self.W2.T, out=self.out)
        self.out += self.b2
        d = self.out
        d -= t
        self.loss = float(np.vdot(d, d)) / d.size
        d *= 2.0 / d.size
        np.matmul(d.T, self.h, out=self.gW2)
        np.matmul(self.ones, d, out=self.gb2)
        np.matmul(d, self.W2, out=self.dh)
        np.greater(self.h, 0, out=self.mask)
        np.multiply(self.dh, self.mask, out=self.dh)
        np.matmul(self.dh.T, x, out=self.gW1)
        np.matmul(self.ones, self.dh, out=self.gb1)
        for p, g in ((self.W1, self.gW1), (self.b1, self.gb1), (self.W2, self.gW2), (self.b2, self.gb2)):
            g *= self.lr
            p -= g


# --------------------------------------------------------------------------------- ddpgrad
def ddpgrad_mlp(weights):
    import ddpgrad
    import ddpgrad.nn as nn

    layers = []
    for i, (w, b) in enumerate(weights):
        lin = nn.Linear(w.shape[1], w.shape[0])
        with ddpgrad.no_grad():
            lin.weight._data[...] = w
            lin.bias._data[...] = b
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def ddpgrad_step(model, optimizer, loss_fn):
    """The ordinary training step, as a user writes it (zero_grad with PyTorch's default)."""
    def step(x, y):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def ddpgrad_tensors(batches):
    import ddpgrad

    return [(ddpgrad.tensor(x), ddpgrad.tensor(y)) for x, y in batches]


# --------------------------------------------------------------------------------- PyTorch
def torch_mlp(weights):
    import torch

    layers = []
    for i, (w, b) in enumerate(weights):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_tensors(batches):
    import torch

    return [(torch.from_numpy(x.copy()), torch.from_numpy(y.copy())) for x, y in batches]
