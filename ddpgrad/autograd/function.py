"""``Function``: a differentiable op and, once applied, a node of the graph.

An op is a class with two static methods written on raw arrays (NumPy or CuPy, whichever its
inputs hold; take the module with ``xp = array_module(x)``)::

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            return grad * b, grad * a

``Mul.apply(x, y)`` takes Tensors (or constants), runs ``forward`` and, when a gradient is needed,
records the call as a node. ``backward`` returns one gradient per positional input (``None`` where
there is none); the engine sums them over broadcast dimensions and casts them to the input's dtype,
so an op never has to undo broadcasting itself.
"""

from __future__ import annotations

import itertools

from ..backend import device_of
from ..tensor import Tensor
from . import grad_mode

_sequence = itertools.count()


class Function:
    """Base class of differentiable ops; see the module docstring."""

    # Per-node attributes, set by ``apply``: ``next_nodes`` (the node feeding each input, or None),
    # ``input_meta`` ((shape, dtype) of each input, or None), ``seq`` (creation order), ``saved``.

    pre_hooks = None

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    def save_for_backward(self, *arrays):
        self.saved = arrays

    @property
    def saved_tensors(self):
        if self.saved is None:
            raise RuntimeError(_FREED_MESSAGE)
        return self.saved

    def name(self):
        """The node's name, as PyTorch's ``grad_fn.name()``: ``MulBackward0``."""
        return type(self).__name__ + "Backward0"

    @property
    def needs_input_grad(self):
        """One bool per positional input of forward: does it need a gradient? (read it in backward)"""
        return tuple(node is not None for node in self.next_nodes)

    def mark_non_differentiable(self, *outputs):
        """Accepted for PyTorch's API; a ddpgrad Function has one output, which is differentiable."""

    def set_materialize_grads(self, value):
        """Accepted for PyTorch's API: ``backward`` always gets an array gradient here."""

    @property
    def next_functions(self):
        """``((node, 0), ...)``, one per input, as PyTorch's ``grad_fn.next_functions``."""
        return tuple((node, 0) for node in self.next_nodes)

    def release(self):
        """Drop what forward kept for backward (the graph was used and not retained)."""
        self.saved = None
        self.freed = True

    def __repr__(self):
        return f"<{self.name()}>"

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run the op on Tensors (or constants) and record it when a gradient is needed."""
        arrays = []
        needs_grad = False
        first = None
        for a in args:
            if isinstance(a, Tensor):
                if a._view is not None:
                    refresh_view(a)
                arr = a._data
                if first is None:
                    first = arr
                elif type(arr) is not type(first) and device_of(arr) != device_of(first):
                    # (types also differ between an ndarray and the NumPy scalar of a 0-d result)
                    _raise_device_mismatch(cls, first, arr)
                needs_grad = needs_grad or a.requires_grad
                arrays.append(arr)
            else:
                arrays.append(a)
        ctx = cls.__new__(cls)
        ctx.saved = ()
        out = Tensor._make(cls.forward(ctx, *arrays, **kwargs))
        if needs_grad and grad_mode.state.enabled:
            nexts, meta, versions = [], [], []
            saved = ctx.saved
            for a in args:
                if isinstance(a, Tensor):
                    if a.requires_grad:
                        nexts.append(a.grad_fn if a.grad_fn is not None else leaf_node(a))
                        meta.append((a._data.shape, a._data.dtype))
                    else:
                        nexts.append(None)
                        meta.append(None)
                    if saved:
                        # Any saved input, with or without grad: changing it in place would
                        # silently change the gradients of the others.
                        data = a._data
                        for s in saved:
                            if s is data:
                                versions.append((a._vc, a._vc[0]))
                                break
                else:
                    nexts.append(None)
                    meta.append(None)
            if saved:
                for s in saved:
                    if s is out._data:
                        versions.append((out._vc, 0))
                        break
            ctx.next_nodes = nexts
            ctx.input_meta = meta
            ctx.versions = versions
            ctx.seq = next(_sequence)
            out.grad_fn = ctx
            out.requires_grad = True
        return out


class AccumulateGrad:
    """The node of a leaf tensor that requires grad: adds incoming gradients into ``.grad``."""

    __slots__ = ("variable", "destination", "sole_contribution", "__weakref__")
    next_nodes = ()
    next_functions = ()
    seq = float("inf")  # leaves are accumulated as soon as their gradient is final
    pre_hooks = None

    def __init__(self, variable):
        self.variable = variable
        self.destination = None  # (array, its Tensor, scale): where the gradient may be written
        self.sole_contribution = False  # set by the engine: one edge into this node in this pass

    def name(self):
        return "torch::autograd::AccumulateGrad"

    def __repr__(self):
        return "<AccumulateGrad>"


def gradient_destination(ctx, i):
    """Where a backward may write input ``i``'s gradient itself: ``(array, scale)``, to be filled
    with ``scale`` times the gradient, when that input is a leaf with no gradient yet, no hooks,
    a ``destination`` set (the DDP reducer's bucket views) and this node as its only contribution
    in this pass; else None. Saves copying the gradient into the buffer afterwards."""
    node = ctx.next_nodes[i]
    if type(node) is not AccumulateGrad or node.destination is None or not node.sole_contribution:
        return None
    variable = node.variable
    if variable.grad is not None or variable._hooks:
        return None
    return node.destination[0], node.destination[2]


_FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or to read saved values after they were "
    "freed). Saved intermediate values are freed when you call .backward() or autograd.grad(); "
    "pass retain_graph=True the first time if you need to backward through the graph again."
)


def _raise_device_mismatch(cls, a, b):
    raise RuntimeError(
        f"{cls.__name__}: expected all tensors to be on the same device, but found at least two "
        f"devices, {device_of(a)} and {device_of(b)}; move them with .to(device) first"
    )


def leaf_node(t):
    """The ``AccumulateGrad`` node of a leaf tensor (made on first use, then kept on the tensor)."""
    if t._acc is None:
        t._acc = AccumulateGrad(t)
    return t._acc


def refresh_view(t):
    """Give a view the current history of its base, after the base (or another view of it) was
    changed in place in the graph: ``t._view`` is (base, replay on tensors, region, base's node)."""
    base, replay, region, seen = t._view
    if base.grad_fn is not seen:
        t._view = (base, replay, region, base.grad_fn)
        if base.requires_grad:
            with grad_mode.enable_grad():
                t.grad_fn = replay(base).grad_fn
            t.requires_grad = True
