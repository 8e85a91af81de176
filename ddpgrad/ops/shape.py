"""Ops that move values around without arithmetic: views, joins, indexing, casts."""

from __future__ import annotations

from ..autograd.function import Function
from ..backend import array_module, device_of, to_device


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise RuntimeError(
                f"shape {list(shape)} is invalid for input of size {a.size} (shape {list(a.shape)})"
            ) from None

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, a, axes):
        if sorted(axes) != list(range(a.ndim)):
            raise RuntimeError(
                f"permute: dims {list(axes)} are not a permutation of the {a.ndim} dims of shape {list(a.shape)}"
            )
        ctx.inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
        return array_module(a).transpose(a, axes)

    @staticmethod
    def backward(ctx, grad):
        return array_module(grad).transpose(grad, ctx.inverse)


class Expand(Function):
    """Broadcast to a larger shape (a view); the engine sums the gradient back down."""

    @staticmethod
    def forward(ctx, a, shape):
        try:
            return array_module(a).broadcast_to(a, shape)
        except ValueError:
            raise RuntimeError(
                f"expand: the expanded size {list(shape)} must match the existing size "
                f"{list(a.shape)} at non-singleton dimensions"
            ) from None

    @staticmethod
    def backward(ctx, grad):
        return grad


class Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, dim=0):
        xp = array_module(arrays[0])
        ctx.sizes = [a.shape[dim] for a in arrays]
        ctx.dim = dim
        try:
            return xp.concatenate(arrays, axis=dim)
        except ValueError:
            raise RuntimeError(
                f"cat: sizes of tensors must match except in dimension {dim}; got shapes "
                f"{[list(a.shape) for a in arrays]}"
            ) from None

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        bounds, total = [], 0
        for n in ctx.sizes[:-1]:
            total += n
            bounds.append(total)
        return tuple(xp.split(grad, bounds, axis=ctx.dim))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, dim=0):
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise RuntimeError(
                f"stack expects each tensor to be equal size, got shapes {[list(a.shape) for a in arrays]}"
            )
        ctx.dim = dim
        ctx.count = len(arrays)
        return array_module(arrays[0]).stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        return tuple(xp.take(grad, i, axis=ctx.dim) for i in range(ctx.count))


def _is_advanced(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(hasattr(i, "dtype") and i.dtype.kind != "b" or isinstance(i, list) for i in items)


class Index(Function):
    """``a[index]``; repeated integer indices accumulate their gradients (scatter-add)."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.index, ctx.dtype = a.shape, index, a.dtype
        try:
            return a[index]
        except IndexError as exc:
            raise IndexError(f"{exc} (indexing a tensor of shape {list(a.shape)})") from None

    @staticmethod
    def backward(ctx, grad):
        xp = array_module(grad)
        out = xp.zeros(ctx.shape, dtype=grad.dtype)
        if _is_advanced(ctx.index):
            xp.add.at(out, ctx.index, grad)
        else:
            out[ctx.index] = grad
        return out


class Clone(Function):
    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, grad):
        return grad


class Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad  # the engine casts it back to the input's dtype


class ToDevice(Function):
    @staticmethod
    def forward(ctx, a, device):
        ctx.source = device_of(a)
        return to_device(a, device)

    @staticmethod
    def backward(ctx, grad):
        return to_device(grad, ctx.source)


class Flip(Function):
    @staticmethod
    def forward(ctx, a, dims=()):
        ctx.dims = dims
        return array_module(a).flip(a, dims).copy()  # a copy, as torch.flip

    @staticmethod
    def backward(ctx, grad):
        return array_module(grad).flip(grad, ctx.dims)


class Roll(Function):
    @staticmethod
    def forward(ctx, a, shifts, dims=None):
        ctx.shifts, ctx.dims = shifts, dims
        return array_module(a).roll(a, shifts, axis=dims)

    @staticmethod
    def backward(ctx, grad):
        back = tuple(-s for s in ctx.shifts) if isinstance(ctx.shifts, tuple) else -ctx.shifts
        return array_module(grad).roll(grad, back, axis=ctx.dims)


class Repeat(Function):
    """``a`` tiled ``reps`` times per dimension (``reps`` may add leading dimensions)."""

    @staticmethod
    def forward(ctx, a, reps):
        xp = array_module(a)
        lead = len(reps) - a.ndim
        ctx.padded = (1,) * lead + tuple(a.shape)
        ctx.reps, ctx.shape = reps, a.shape
        return xp.tile(a.reshape(ctx.padded), reps)

    @staticmethod
    def backward(ctx, grad):
        split = []
        for r, n in zip(ctx.reps, ctx.padded):
            split += [r, n]
        summed = grad.reshape(split).sum(axis=tuple(range(0, len(split), 2)))
        return summed.reshape(ctx.shape)


class Einsum(Function):
    """``einsum`` on explicit subscripts (``ij,jk->ik``); each operand's gradient is one more einsum."""

    @staticmethod
    def forward(ctx, *arrays, inputs=(), output=""):
        ctx.inputs, ctx.output = inputs, output
        ctx.save_for_backward(*arrays)
        return array_module(arrays[0]).einsum(",".join(inputs) + "->" + output, *arrays)

    @staticmethod
    def backward(ctx, grad):
        arrays = ctx.saved_tensors
        xp = array_module(grad)
        grads = []
        for i, (subs, x) in enumerate(zip(ctx.inputs, arrays)):
            if ctx.next_nodes[i] is None:
                grads.append(None)
                continue
            if len(set(subs)) != len(subs):
                raise NotImplementedError(
                    f"einsum backward: repeated subscripts within one operand ({subs!r}) are not "
                    f"supported; take the diagonal first (ddpgrad.diagonal)"
                )
            others = [s for j, s in enumerate(ctx.inputs) if j != i]
            known = set(ctx.output).union(*others) if others else set(ctx.output)
            kept = "".join(c for c in subs if c in known)
            g = xp.einsum(",".join([ctx.output] + others) + "->" + kept,
                          grad, *[a for j, a in enumerate(arrays) if j != i])
            if kept != subs:  # letters summed only inside this operand: broadcast back
                g = xp.broadcast_to(
                    g.reshape([x.shape[k] if c in known else 1 for k, c in enumerate(subs)]), x.shape)
            grads.append(g)
        return tuple(grads)
