"""In-place operations with PyTorch's rules.

``x.op_(...)`` writes the result of ``op(x, ...)`` into ``x``'s own array, so every view and alias
of ``x`` sees it, and bumps ``x``'s version counter (backward through a node that saved the old
values then raises instead of using them).

- Outside the graph (under ``no_grad``, or when nothing involved requires grad) it is a plain
  array update.
- On a leaf that requires grad, in grad mode, it is an error (PyTorch's message).
- On a tensor in the graph (a non-leaf, or any tensor combined in place with one that requires
  grad) the op is recorded: the tensor is *rebased* onto the new node, so gradients flow through
  the in-place op. A view that is written to rebases its base too (through ``ScatterView``), and
  other views of that base pick up the new history the next time they are used.
"""

from __future__ import annotations

import numpy as np

from ..autograd import grad_mode
from ..autograd.function import Function, refresh_view
from ..backend import array_module, get_default_dtype
from ..tensor import Tensor
from .promotion import category, result_type

LEAF_MESSAGE = (
    "a leaf Variable that requires grad is being used in an in-place operation. Wrap the update "
    "in `with ddpgrad.no_grad():` (as optimizers do), or use the out-of-place form (x = x + y)."
)
VIEW_OF_LEAF_MESSAGE = (
    "a view of a leaf Variable that requires grad is being used in an in-place operation. Wrap "
    "the update in `with ddpgrad.no_grad():`, or work on a copy (x.clone())."
)


class ScatterView(Function):
    """``base`` with the region a view selects replaced by ``value``: how a written view updates its base."""

    @staticmethod
    def forward(ctx, base, value, region=None):
        ctx.region = region
        out = base.copy()
        region(out)[...] = value
        return out

    @staticmethod
    def backward(ctx, grad):
        g_base = grad.copy()
        ctx.region(g_base)[...] = 0
        return g_base, ctx.region(grad)


class IndexPut(Function):
    """``a`` with ``a[index] = value`` (the graph form of ``__setitem__``)."""

    @staticmethod
    def forward(ctx, a, value, index=None):
        ctx.index = index
        out = a.copy()
        out[index] = value
        return out

    @staticmethod
    def backward(ctx, grad):
        g_a = grad.copy()
        g_a[ctx.index] = 0
        return g_a, grad[ctx.index]


class Overwrite(Function):
    """``src`` broadcast to ``a``'s shape and dtype (the graph form of ``copy_`` and ``fill_``)."""

    @staticmethod
    def forward(ctx, a, src):
        xp = array_module(a)
        out = xp.empty_like(a)
        xp.copyto(out, xp.asarray(src) if not hasattr(src, "shape") else src, casting="unsafe")
        return out

    @staticmethod
    def backward(ctx, grad):
        return None, grad


def _requires_grad(args):
    for a in args:
        if isinstance(a, Tensor) and a.requires_grad:
            return True
    return False


def _in_graph(t, copy=True):
    """``t``'s values standing for ``t`` in the graph: a copy, since the op may save its input and
    the result is about to overwrite ``t``'s array (``copy=False`` for ops that save nothing)."""
    if t._view is not None:
        refresh_view(t)
    c = Tensor._make(t._data.copy() if copy else t._data)
    c.grad_fn, c.requires_grad = t.grad_fn, t.requires_grad
    return c


def _dtype_name(dtype):
    return {"f": "Float", "i": "Long", "u": "Byte", "b": "Bool", "c": "ComplexFloat"}[dtype.kind]


def check_result_dtype(name, result_dtype, self_dtype):
    if category(result_dtype) > category(self_dtype):
        raise RuntimeError(
            f"{name}: result type {_dtype_name(result_dtype)} ({result_dtype}) can't be cast to the "
            f"desired output type {_dtype_name(self_dtype)} ({self_dtype}); convert this tensor first "
            f"(e.g. x = x.float()) or use the out-of-place form"
        )


def _check_shape(name, self, out):
    if tuple(out.shape) != tuple(self._data.shape):
        raise RuntimeError(
            f"{name}: output with shape {list(self._data.shape)} doesn't match the broadcast shape "
            f"{list(out.shape)}"
        )


def apply_inplace(self, name, fn, *args, _saves_input=True, **kwargs):
    """Compute ``fn(self, *args, **kwargs)`` and write it into ``self``, as PyTorch's ``op_`` does."""
    recording = grad_mode.state.enabled and (self.requires_grad or _requires_grad(args))
    if not recording:
        with grad_mode.no_grad():
            out = fn(self, *args, **kwargs)
        check_result_dtype(name, out.dtype, self.dtype)
        _check_shape(name, self, out)
        xp = array_module(self._data)
        xp.copyto(self._own_array(), out._data, casting="unsafe")
        return self._bump()
    if self.requires_grad and self.grad_fn is None:
        raise RuntimeError(f"{name}: {LEAF_MESSAGE}")
    view = self._view
    if view is not None and view[0].requires_grad and view[0].grad_fn is None:
        raise RuntimeError(f"{name}: {VIEW_OF_LEAF_MESSAGE}")
    out = fn(_in_graph(self, copy=_saves_input), *args, **kwargs)
    if not out.requires_grad:
        raise RuntimeError(
            f"{name}: the derivative for this op is not implemented (it has no gradient), so it can't "
            f"change a tensor that requires grad in place; do it under ddpgrad.no_grad() or on x.detach()"
        )
    check_result_dtype(name, out.dtype, self.dtype)
    _check_shape(name, self, out)
    if out.dtype != self.dtype:
        out = out.to(self.dtype)
    if view is None:
        array_module(self._data).copyto(self._own_array(), out._data)
        self.grad_fn, self.requires_grad = out.grad_fn, True
        return self._bump()
    base, replay, region, _ = view
    if not getattr(self._data.flags, "writeable", True):
        raise RuntimeError(
            f"{name}: unsupported operation: more than one element of the written-to tensor refers "
            f"to a single memory location (an expanded view); clone it first"
        )
    new_base = ScatterView.apply(_in_graph(base), out, region=region)
    region(base._own_array())[...] = out._data
    base.grad_fn, base.requires_grad = new_base.grad_fn, True
    self._view = (base, replay, region, base.grad_fn)
    self.grad_fn = replay(base).grad_fn
    self.requires_grad = True
    return self._bump()


def arith_inplace(self, name, fn, ufunc, other):
    """``self (op)= other`` for add/sub/mul/div: one ufunc into ``self``'s array outside the graph."""
    if grad_mode.state.enabled and (self.requires_grad or (isinstance(other, Tensor) and other.requires_grad)):
        # add and sub keep nothing of their inputs: no need to copy self before overwriting it
        return apply_inplace(self, name, fn, other, _saves_input=name not in ("add_", "sub_"))
    if isinstance(other, np.generic):
        other = other.item()  # a NumPy scalar counts as a Python number, a raw array as a tensor
    elif not isinstance(other, Tensor) and hasattr(other, "dtype"):
        other = Tensor._make(other)
    target = result_type(self, other)
    if name == "div_" and target.kind not in "fc":
        target = get_default_dtype()  # true division of integers gives floats
    check_result_dtype(name, target, self.dtype)
    data = self._own_array()
    operand = other._data if isinstance(other, Tensor) else other
    try:
        ufunc(data, operand, out=data, casting="unsafe")
    except ValueError:
        shape = array_module(data).broadcast_shapes(data.shape, getattr(operand, "shape", ()))
        raise RuntimeError(
            f"{name}: output with shape {list(data.shape)} doesn't match the broadcast shape {list(shape)}"
        ) from None
    return self._bump()
