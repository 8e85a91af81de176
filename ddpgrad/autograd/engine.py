"""The backward engine: an iterative walk of the graph, by dependency counts, no recursion.

1. From the roots, count for every reachable node how many edges point into it.
2. Nodes whose count is zero are ready; the latest-created ready node runs first (a heap on the
   creation sequence, as PyTorch does), so leaf gradients become final roughly in reverse order of
   the forward pass, which is what lets the gradient reducer start communication early.
3. Gradients reaching a node are summed before it runs. Leaves add their gradient *in place* into
   an existing ``.grad`` buffer, then fire their post-accumulate hooks once.
   A leaf without ``.grad`` takes the incoming array itself, without a copy, when the engine knows
   that nothing else holds it: each buffered gradient carries an *owned* flag, true for arrays
   the engine made (sums, casts) and for new arrays returned by ddpgrad's own ops (not one of
   their saved arrays or attributes, not handed to two inputs, not seen by a hook).
4. Callbacks queued during the pass run when it ends.
"""

from __future__ import annotations

import heapq
import threading

from ..backend import array_module
from ..tensor import Tensor
from .function import _FREED_MESSAGE, AccumulateGrad, leaf_node
from .grad_mode import no_grad


class _EngineState(threading.local):
    callbacks = None  # list while a backward pass runs on this thread


_state = _EngineState()


def queue_callback(fn):
    """Run ``fn()`` once, when the backward pass now running on this thread finishes."""
    if _state.callbacks is None:
        raise RuntimeError("queue_callback can only be called while a backward pass is running")
    _state.callbacks.append(fn)


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        return grad.reshape(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1
    )
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def run_backward(roots, root_grads, retain_graph=False, capture=None):
    """Backpropagate ``root_grads`` (arrays) from ``roots`` (Tensors).

    Without ``capture``, leaf gradients accumulate into ``.grad``. With ``capture`` (a dict
    mapping nodes to None), gradients reaching those nodes are stored there instead and no
    ``.grad`` is touched (``autograd.grad``).
    """
    buffers = {}  # node -> [gradient, owned]
    for t, g in zip(roots, root_grads):
        node = t.grad_fn if t.grad_fn is not None else leaf_node(t)
        buffers[node] = [buffers[node][0] + g, True] if node in buffers else [g, False]

    deps = {}
    stack = list(buffers)
    seen = set(stack)
    while stack:
        for parent in stack.pop().next_nodes:
            if parent is None:
                continue
            deps[parent] = deps.get(parent, 0) + 1
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)

    for parent, count in deps.items():
        if type(parent) is AccumulateGrad:
            parent.sole_contribution = capture is None and count == 1

    tiebreak = 0
    ready = []
    for node in buffers:
        if node not in deps:
            ready.append((-node.seq, tiebreak, node))
            tiebreak += 1
    heapq.heapify(ready)

    outer_callbacks = _state.callbacks
    _state.callbacks = callbacks = []
    try:
        with no_grad():
            while ready:
                node = heapq.heappop(ready)[2]
                entry = buffers.pop(node, None)
                grad, owned = (None, False) if entry is None else entry
                if grad is None:
                    # Every edge into this node carried None (no gradient): its inputs get none
                    # from it either, but their edges from it still count as done.
                    if type(node) is AccumulateGrad:
                        continue
                    grads = (None,) * len(node.next_nodes)
                elif type(node) is AccumulateGrad:
                    if capture is None:
                        _accumulate(node.variable, grad, owned, node.destination)
                    elif node in capture:
                        hooks = node.variable._hooks
                        capture[node] = _run_pre_hooks(hooks, grad) if hooks else grad
                    continue
                else:
                    if node.pre_hooks:
                        grad = _run_pre_hooks(node.pre_hooks, grad)
                        owned = False  # a hook may keep the tensor it was given
                    if capture is not None and node in capture:
                        capture[node] = grad
                        owned = False
                    if node.saved is None:
                        raise RuntimeError(_FREED_MESSAGE)
                    if node.versions:
                        _check_versions(node)
                    grads = node.backward(node, grad)
                    if type(grads) is not tuple:
                        grads = (grads,)
                nexts = node.next_nodes
                if len(grads) != len(nexts):
                    grads = _fit_grads(node, grads)
                for parent, g, meta in zip(nexts, grads, node.input_meta):
                    if parent is None:
                        continue
                    if g is not None:
                        fresh = _owned_output(node, g, grad, owned, grads)
                        shape, dtype = meta
                        if g.shape != shape:
                            g = unbroadcast(g, shape)
                            fresh = fresh or g.base is None
                        if g.dtype != dtype:
                            g = g.astype(dtype)
                            fresh = True
                        if parent in buffers:
                            held = buffers[parent]
                            held[0], held[1] = held[0] + g, True
                        else:
                            buffers[parent] = [g, fresh]
                    left = deps[parent] - 1
                    deps[parent] = left
                    if left == 0:
                        heapq.heappush(ready, (-parent.seq, tiebreak, parent))
                        tiebreak += 1
                if grad is not None and type(node) is not AccumulateGrad and not retain_graph:
                    node.release()
            while callbacks:
                callbacks.pop(0)()
    finally:
        _state.callbacks = outer_callbacks


def _owned_output(node, g, grad, owned, grads):
    """Whether ``g``, one gradient ``node.backward`` returned, belongs to nobody but the engine."""
    if sum(1 for x in grads if x is g) > 1:
        return False  # handed to two inputs (``Add`` passes the same array to both)
    if g is grad:
        return owned  # passed through: as owned as what came in
    if not type(node).__module__.startswith(_BUILTIN_OPS):
        return False  # a user's Function may keep what it returns anywhere
    for kept in node.saved or ():
        if g is kept:
            return False
    for kept in vars(node).values():
        if g is kept:
            return False
    return True


_BUILTIN_OPS = "ddpgrad."


def _run_pre_hooks(hooks, grad):
    for hook in hooks:
        result = hook(Tensor._make(grad))
        if result is not None:
            grad = result._data
    return grad


def _fit_grads(node, grads):
    """Pad (or trim) ``grads`` to one per input; only inputs without a gradient may be left out."""
    nexts = node.next_nodes
    n, m = len(nexts), len(grads)
    if m < n and all(p is None for p in nexts[m:]):
        return grads + (None,) * (n - m)
    if m > n and all(g is None for g in grads[n:]):
        return grads[:n]
    raise RuntimeError(
        f"{node.name()} returned an incorrect number of gradients (expected {n}, got {m}): "
        f"backward must return one gradient per positional input of forward (None where there is none)"
    )


def _accumulate(variable, grad, owned=False, destination=None):
    if variable._hooks:
        grad = _run_pre_hooks(variable._hooks, grad)
        owned = False
    existing = variable.grad
    if existing is None:
        if destination is not None and grad is destination[0]:
            variable.grad = destination[1]  # the backward wrote it there (gradient_destination)
        elif owned and _takeable(grad):
            variable.grad = Tensor._make(grad)  # nobody else holds it: take it, no copy
        else:
            # A copy (grad may alias another tensor's array), and always a real array: NumPy hands
            # 0-d results back as scalars, which ``+=`` would rebind instead of updating in place.
            variable.grad = Tensor._make(array_module(grad).array(grad))
    else:
        existing._data += grad
    if variable._post_hooks:
        for hook in variable._post_hooks:
            hook(variable)


def _takeable(grad):
    """A writable array that owns its memory (not a view, not a 0-d NumPy scalar)."""
    return (getattr(grad, "base", 0) is None and getattr(grad, "ndim", 0) > 0
            and getattr(grad.flags, "writeable", True))


def _check_versions(node):
    for counter, expected in node.versions:
        if counter[0] != expected:
            raise RuntimeError(
                f"one of the variables needed for gradient computation has been modified by an "
                f"in-place operation: an input of {node.name()} is at version {counter[0]}; expected "
                f"version {expected} instead. Modify a copy (x = x.clone()) or do the in-place "
                f"change after backward."
            )
