"""More of PyTorch's functional surface, composed from the differentiable ops (so gradients come
for free) or computed without gradients where PyTorch has none (searches, counts, draws)."""

from __future__ import annotations

import numpy as np

from .. import backend, random
from ..autograd.function import Function
from ..backend import array_module
from ..tensor import Size, Tensor
from . import creation
from . import functional as ops


def _arr(x):
    return x._data if isinstance(x, Tensor) else x


# ---------------------------------------------------------------------------- joins and grids
def atleast_1d(*tensors):
    out = [t.reshape(1) if t.ndim == 0 else t for t in _flat_args(tensors)]
    return out[0] if len(out) == 1 else tuple(out)


def atleast_2d(*tensors):
    out = []
    for t in _flat_args(tensors):
        out.append(t.reshape(1, 1) if t.ndim == 0 else t.unsqueeze(0) if t.ndim == 1 else t)
    return out[0] if len(out) == 1 else tuple(out)


def _flat_args(tensors):
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        return list(tensors[0])
    return list(tensors)


def hstack(tensors):
    tensors = [t.reshape(1) if t.ndim == 0 else t for t in tensors]
    return ops.cat(tensors, dim=0 if tensors[0].ndim == 1 else 1)


def vstack(tensors):
    return ops.cat([atleast_2d(t) for t in tensors], dim=0)


row_stack = vstack


def column_stack(tensors):
    return ops.cat([t.reshape(-1, 1) if t.ndim <= 1 else t for t in tensors], dim=1)


def dstack(tensors):
    grown = []
    for t in tensors:
        t = atleast_2d(t)
        grown.append(t.unsqueeze(-1) if t.ndim == 2 else t)
    return ops.cat(grown, dim=2)


def broadcast_tensors(*tensors):
    tensors = _flat_args(tensors)
    shape = np.broadcast_shapes(*(tuple(t.shape) for t in tensors))
    return tuple(t.expand(shape) for t in tensors)


def broadcast_shapes(*shapes):
    return Size(np.broadcast_shapes(*shapes))


def meshgrid(*tensors, indexing="ij"):
    """Coordinate grids from 1-D tensors; ``indexing='xy'`` puts the second input on the first axis."""
    tensors = _flat_args(tensors)
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    swap = indexing == "xy" and len(tensors) >= 2
    if swap:
        tensors = [tensors[1], tensors[0]] + tensors[2:]
    n = len(tensors)
    shape = tuple(t.numel() for t in tensors)
    grids = []
    for i, t in enumerate(tensors):
        view = [1] * n
        view[i] = -1
        grids.append(t.reshape(view).expand(shape))
    if swap:
        grids[0], grids[1] = grids[1], grids[0]
    return tuple(grids)


def cartesian_prod(*tensors):
    grids = meshgrid(*tensors, indexing="ij")
    return ops.stack([g.reshape(-1) for g in grids], dim=1) if len(grids) > 1 else grids[0]


def rot90(input, k=1, dims=(0, 1)):  # noqa: A002
    k %= 4
    d0, d1 = dims
    if k == 1:
        return input.flip(d1).transpose(d0, d1)
    if k == 2:
        return input.flip((d0, d1))
    if k == 3:
        return input.transpose(d0, d1).flip(d1)
    return input.clone()


def diag_embed(input, offset=0, dim1=-2, dim2=-1):  # noqa: A002
    if (offset, dim1, dim2) != (0, -2, -1):
        raise NotImplementedError("diag_embed: only offset=0, dim1=-2, dim2=-1 are supported")
    n = input.shape[-1]
    eye = creation.eye(n, dtype=input.dtype, device=input.device)
    return input.unsqueeze(-1) * eye


def diagflat(input, offset=0):  # noqa: A002
    return ops.diag(input.reshape(-1), offset)


# ---------------------------------------------------------------------------- products
def tensordot(a, b, dims=2):
    """Contract the last ``dims`` axes of ``a`` with the first of ``b`` (or the given axis lists)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    if isinstance(dims, int):
        axes_a = list(range(a.ndim - dims, a.ndim))
        axes_b = list(range(dims))
    else:
        axes_a, axes_b = ([d] if isinstance(d, int) else list(d) for d in dims)
    axes_a = [d % a.ndim for d in axes_a]
    axes_b = [d % b.ndim for d in axes_b]
    sa = list(letters[:a.ndim])
    sb = list(letters[a.ndim:a.ndim + b.ndim])
    for i, j in zip(axes_a, axes_b):
        sb[j] = sa[i]
    out = [c for i, c in enumerate(sa) if i not in axes_a] + [c for j, c in enumerate(sb) if j not in axes_b]
    return ops.einsum(f"{''.join(sa)},{''.join(sb)}->{''.join(out)}", a, b)


def kron(input, other):  # noqa: A002
    if input.ndim != 2 or other.ndim != 2:
        raise NotImplementedError("kron: only 2-D tensors are supported")
    (m, n), (p, q) = input.shape, other.shape
    return (input.reshape(m, 1, n, 1) * other.reshape(1, p, 1, q)).reshape(m * p, n * q)


def cross(input, other, dim=None):  # noqa: A002
    if dim is None:
        dim = next(i for i, n in enumerate(input.shape) if n == 3)
    a = [input.select(dim, i) for i in range(3)]
    b = [other.select(dim, i) for i in range(3)]
    parts = [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
    return ops.stack(parts, dim=dim)


def addmv(input, mat, vec, *, beta=1, alpha=1):  # noqa: A002
    return beta * input + alpha * (mat @ vec)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):  # noqa: A002
    return beta * input + alpha * (batch1 @ batch2)


def addbmm(input, batch1, batch2, *, beta=1, alpha=1):  # noqa: A002
    return beta * input + alpha * (batch1 @ batch2).sum(0)


def cdist(x1, x2, p=2.0):
    """Pairwise p-norm distances between the rows of ``x1`` (…, P, M) and ``x2`` (…, R, M)."""
    return ops.norm(x1.unsqueeze(-2) - x2.unsqueeze(-3), p, -1)


# ---------------------------------------------------------------------------- statistics
def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):  # noqa: A002
    var = ops.var(input, dim, unbiased, keepdim, correction=correction)
    d = dim if not isinstance(dim, bool) else None
    return var, ops.mean(input, d, keepdim=keepdim) if d is not None else ops.mean(input)


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):  # noqa: A002
    std = ops.std(input, dim, unbiased, keepdim, correction=correction)
    d = dim if not isinstance(dim, bool) else None
    return std, ops.mean(input, d, keepdim=keepdim) if d is not None else ops.mean(input)


def logit(input, eps=None):  # noqa: A002
    x = input if eps is None else ops.clamp(input, eps, 1 - eps)
    return ops.log(x / (1 - x))


def heaviside(input, values):  # noqa: A002
    xp = array_module(input._data)
    data = input._data
    return Tensor._make(xp.where(data > 0, 1, xp.where(data == 0, _arr(values), 0)).astype(data.dtype))


# ---------------------------------------------------------------------------- searches and counts
def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None):  # noqa: A002
    xp = array_module(sorted_sequence._data)
    side = side or ("right" if right else "left")
    values = _arr(input)
    seq = sorted_sequence._data
    if seq.ndim == 1:
        idx = xp.searchsorted(seq, values, side=side)
    else:
        idx = xp.stack([xp.searchsorted(s, v, side=side) for s, v in zip(seq.reshape(-1, seq.shape[-1]),
                                                                           xp.asarray(values).reshape(-1, np.shape(values)[-1]))])
        idx = idx.reshape(np.shape(values))
    return Tensor._make(xp.asarray(idx, dtype=np.int32 if out_int32 else np.int64))


def bucketize(input, boundaries, *, out_int32=False, right=False):  # noqa: A002
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):  # noqa: A002
    xp = array_module(input._data)
    if dim is not None:
        raise NotImplementedError("unique(dim=...) is not supported")
    values, inverse, counts = xp.unique(input._data, return_inverse=True, return_counts=True)
    out = [Tensor._make(values)]
    if return_inverse:
        out.append(Tensor._make(inverse.reshape(input.shape).astype(np.int64)))
    if return_counts:
        out.append(Tensor._make(counts.astype(np.int64)))
    return out[0] if len(out) == 1 else tuple(out)


def bincount(input, weights=None, minlength=0):  # noqa: A002
    xp = array_module(input._data)
    return Tensor._make(xp.bincount(input._data, weights=_arr(weights), minlength=minlength))


def histc(input, bins=100, min=0, max=0):  # noqa: A002
    xp = array_module(input._data)
    data = input._data
    lo, hi = (float(data.min()), float(data.max())) if min == max else (min, max)
    counts, _ = xp.histogram(data, bins=bins, range=(lo, hi))
    return Tensor._make(counts.astype(data.dtype))


def isin(elements, test_elements, *, invert=False):
    xp = array_module(_arr(elements))
    return Tensor._make(xp.isin(_arr(elements), _arr(test_elements), invert=invert))


def is_nonzero(input):  # noqa: A002
    if input.numel() != 1:
        raise RuntimeError(f"Boolean value of Tensor with {input.numel()} values is ambiguous")
    return bool(input.item())


# ---------------------------------------------------------------------------- random draws
def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, device=None):
    """Samples of N(mean, std²); ``mean`` and ``std`` may be tensors (elementwise)."""
    if size is not None:
        return Tensor._make(random.normal_array(mean, std, size, dtype, device, generator))
    shape = np.broadcast_shapes(tuple(getattr(mean, "shape", ())), tuple(getattr(std, "shape", ())))
    like = mean if isinstance(mean, Tensor) else std
    z = random.normal_array(0.0, 1.0, shape, like.dtype, like.device, generator)
    return Tensor._make(z * _arr(std) + _arr(mean))


def bernoulli(input, p=None, *, generator=None):  # noqa: A002
    probs = input._data if p is None else p
    u = random.uniform_array(0.0, 1.0, input.shape, input.dtype, input.device, generator)
    return Tensor._make((u < probs).astype(input.dtype))


def multinomial(input, num_samples, replacement=False, *, generator=None):  # noqa: A002
    """Indices drawn from the rows of ``input`` (non-negative weights)."""
    probs = np.asarray(backend.to_device(input._data, backend.CPU), dtype=np.float64)
    rows = probs.reshape(-1, probs.shape[-1])
    rng = random._rng(generator)
    draws = []
    for row in rows:
        weights = row / row.sum()
        if not replacement and num_samples > np.count_nonzero(weights):
            raise RuntimeError("multinomial: cannot sample n_sample > prob_dist.size(-1) samples without replacement")
        draws.append(rng.choice(len(row), size=num_samples, replace=replacement, p=weights))
    out = np.stack(draws).reshape(probs.shape[:-1] + (num_samples,)).astype(np.int64)
    return Tensor._make(backend.to_device(out, input.device))


def poisson(input, generator=None):  # noqa: A002
    rng = random._rng(generator)
    rates = np.asarray(backend.to_device(input._data, backend.CPU))
    return Tensor._make(backend.to_device(rng.poisson(rates).astype(input.dtype), input.device))


def randint_like(input, low=0, high=None, *, dtype=None, device=None):  # noqa: A002
    if high is None:
        low, high = 0, low
    return Tensor._make(random.randint_array(low, high, input.shape, dtype or input.dtype, device or input.device))


# ---------------------------------------------------------------------------- linear algebra
class Inverse(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).linalg.inv(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (inv,) = ctx.saved_tensors
        t = array_module(inv).swapaxes(inv, -1, -2)
        return -(t @ grad @ t)


class Det(Function):
    @staticmethod
    def forward(ctx, a):
        xp = array_module(a)
        out = xp.linalg.det(a)
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        xp = array_module(a)
        inv_t = xp.swapaxes(xp.linalg.inv(a), -1, -2)
        return (grad * out)[..., None, None] * inv_t


def inverse(input):  # noqa: A002
    return Inverse.apply(input)


def det(input):  # noqa: A002
    return Det.apply(input)


def logdet(input):  # noqa: A002
    return ops.log(det(input))


def solve(A, B):  # noqa: N803 - PyTorch's names
    """``X`` with ``A @ X = B`` (through the inverse: fine for the small systems of training scripts)."""
    return inverse(A) @ B



__all__ = [
    name for name, value in list(globals().items())
    if not name.startswith("_") and callable(value) and not isinstance(value, type)
    and name not in ("floating", "promote")
    and getattr(value, "__module__", "").startswith("ddpgrad.ops")
]
