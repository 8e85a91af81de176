"""``backward`` and ``grad``: the entry points that start the engine from a set of outputs."""

from __future__ import annotations

from ..backend import array_module as _array_module
from ..tensor import Tensor
from .engine import run_backward
from .function import leaf_node


def _root_grads(outputs, grad_outputs):
    grads = []
    for i, out in enumerate(outputs):
        if not out.requires_grad:
            raise RuntimeError(
                f"element {i} of tensors does not require grad and does not have a grad_fn: "
                f"nothing to differentiate (did you compute it under no_grad, or forget requires_grad=True?)"
            )
        g = None if grad_outputs is None else grad_outputs[i]
        if g is None:
            if out._data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs, but this output has "
                    f"shape {list(out.shape)}: pass gradient= (a tensor of that shape), or reduce "
                    f"the output first (e.g. out.sum())"
                )
            g = _array_module(out._data).ones_like(out._data)
        else:
            g = g._data if isinstance(g, Tensor) else g
            if tuple(g.shape) != tuple(out.shape):
                raise RuntimeError(
                    f"gradient has shape {list(g.shape)} but the output has shape {list(out.shape)}"
                )
            if g.dtype != out._data.dtype:
                g = g.astype(out._data.dtype)
        grads.append(g)
    return grads


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate the gradients of ``tensors`` into the ``.grad`` of the graph's leaves."""
    if create_graph:
        raise NotImplementedError("create_graph=True (higher-order gradients) is not supported")
    if inputs is not None:
        raise NotImplementedError("backward(inputs=...) is not supported; use autograd.grad")
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is not None and isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors]
    run_backward(tensors, _root_grads(tensors, grad_tensors), bool(retain_graph))


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs``, returned (``.grad`` is untouched)."""
    if create_graph:
        raise NotImplementedError("create_graph=True (higher-order gradients) is not supported")
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    nodes = []
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"input {i} of autograd.grad does not require grad")
        nodes.append(t.grad_fn if t.grad_fn is not None else leaf_node(t))
    capture = dict.fromkeys(nodes)
    run_backward(outputs, _root_grads(outputs, grad_outputs), bool(retain_graph), capture=capture)
    result = []
    for i, node in enumerate(nodes):
        g = capture[node]
        if g is None and not allow_unused:
            raise RuntimeError(
                f"input {i} of autograd.grad was not used in the graph; pass allow_unused=True "
                f"to get None for it"
            )
        result.append(None if g is None else Tensor._make(g))
    return tuple(result)
