"""``Optimizer``: parameter groups, per-parameter state, ``zero_grad`` and checkpointable state.

Updates are written in place into ``p._data`` and into state buffers allocated on the first
step, through the array module of each parameter (NumPy or CuPy), so a step allocates no new
arrays after the first. ``p.grad`` is only read: the distributed reducer may hand out gradients
that are views into one flat buffer.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import enable_grad
from ..tensor import Tensor


CHUNK_ELEMENTS = 1 << 16
"""Elements per piece of an in-place update: 256 KB of float32, small enough for the L2 cache
across an update's passes (measured on SGD with momentum, 1024x1024 float32: 1.9 -> 1.3 ms)."""

class Optimizer:
    """Base class: holds ``param_groups`` (dicts of params + hyperparameters) and ``state``.

    Subclasses set ``defaults`` (their hyperparameters), check values in ``_validate(group)``
    and update one parameter in place in ``_update(p, grad, group)``.
    """

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = {}  # parameter -> dict of state Tensors/numbers (PyTorch's layout)
        self._scratch = {}  # parameter -> work arrays reused every step (never checkpointed)
        self.param_groups = []
        self._validate(defaults)
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, "
                "but got a single Tensor: wrap it in a list, e.g. SGD([p], ...)"
            )
        groups = _ordered(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"

    def _validate(self, group):
        """Raise ValueError for an invalid hyperparameter in ``group`` (subclasses extend)."""
        if group.get("lr", 0.0) < 0.0:
            raise ValueError(f"Invalid learning rate: {group['lr']} (must be >= 0)")
        if group.get("weight_decay", 0.0) < 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']} (must be >= 0)")

    def add_param_group(self, param_group):
        """Add a group of parameters with its own hyperparameters (unset ones take the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else _ordered(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(
                    "can't optimize a non-leaf Tensor (it was computed from other tensors): pass the "
                    "leaf parameters, or .detach().requires_grad_() a copy"
                )
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        taken = {id(p) for group in self.param_groups for p in group["params"]}
        if taken.intersection(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        group = {"params": params}
        group.update((k, v) for k, v in param_group.items() if k != "params")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._validate(group)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Clear gradients: drop them (``set_to_none=True``) or zero the existing arrays in place."""
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    grad.grad_fn = None
                    grad.requires_grad = False
                    grad._data.fill(0)
                    grad._bump()

    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad._data, group)
                    p._bump()
        return loss

    def _update(self, p, grad, group):
        raise NotImplementedError

    def _work(self, p, count, shape):
        """``count`` scratch arrays of ``shape`` and ``p``'s dtype, allocated once and reused."""
        bufs = self._scratch.get(p)
        data = p._data
        if bufs is None or bufs[0].shape != shape or bufs[0].dtype != data.dtype \
                or type(bufs[0]) is not type(data):
            bufs = self._scratch[p] = []
        while len(bufs) < count:
            bufs.append(backend.array_module(data).empty(shape, dtype=data.dtype))
        return bufs

    def _chunks(self, p, count, *arrays):
        """Yield ``(scratch, *views)``: ``arrays`` (shaped like ``p``) in cache-sized pieces.

        An update makes several elementwise passes; over a piece of ``CHUNK_ELEMENTS`` they stay
        in the CPU cache instead of streaming the whole parameter from memory each time, and the
        scratch arrays are one piece, not one parameter, large. On a GPU the arrays go whole.
        """
        data = p._data
        n = data.size
        if n <= CHUNK_ELEMENTS or not isinstance(data, np.ndarray) or not data.flags.c_contiguous:
            yield (self._work(p, count, data.shape), *arrays)
            return
        flats = [a.reshape(-1) for a in arrays]
        work = self._work(p, count, (CHUNK_ELEMENTS,))
        for start in range(0, n, CHUNK_ELEMENTS):
            stop = min(start + CHUNK_ELEMENTS, n)
            scratch = work if stop - start == CHUNK_ELEMENTS else [w[:stop - start] for w in work]
            yield (scratch, *(f[start:stop] for f in flats))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """``{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]}``, as PyTorch.

        Parameters are numbered in group order. State values are the live Tensors (copy them, or
        write them out with ``ddpgrad.save``, before stepping again if you keep the dict).
        """
        index = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state saved by ``state_dict`` into this optimizer.

        Arrays are copied into the existing state buffers where they exist (cast to each
        parameter's dtype and device), so the loaded dict is never aliased.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, but this optimizer has "
                f"{len(self.param_groups)}: build the optimizer with the same groups as the saved one"
            )
        by_index = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"loaded state dict's parameter group {i} has {len(saved['params'])} parameters, "
                    f"but this optimizer's group {i} has {len(group['params'])}: the model or the "
                    f"grouping changed since the checkpoint was written"
                )
            by_index.update({int(k): p for k, p in zip(saved["params"], group["params"])})
        state = {}
        for key, saved in state_dict["state"].items():
            p = by_index[int(key)]
            current = self.state.get(p, {})
            state[p] = {k: _restore(p, k, v, current.get(k)) for k, v in saved.items()}
        self.state = state
        for group, saved in zip(self.param_groups, saved_groups):
            group.update((k, _plain(v)) for k, v in saved.items() if k != "params")


def _ordered(params):
    if isinstance(params, (set, frozenset)):
        raise TypeError(
            "optimizer parameters need to be organized in ordered collections, but the order of "
            "tensors in a set changes between runs: use a list instead"
        )
    return list(params)


def _plain(value):
    """Hyperparameters may come back from a checkpoint as lists or 0-d arrays: make them Python."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, (Tensor, np.ndarray, np.generic)) and np.ndim(value) == 0:
        return np.asarray(value).item()
    return value


def _restore(p, key, value, current):
    """A copy of a saved state value, on ``p``'s device; reuses ``current``'s array if it fits."""
    if key == "step":  # a host scalar, as in PyTorch (read every step; never on the GPU)
        value = _host_scalar(float(value))
    elif isinstance(value, np.ndarray) or backend.is_cuda_array(value):
        value = Tensor._make(value)
    if not isinstance(value, Tensor):
        return value
    src = backend.to_device(value._data, value.device if key == "step" else p.device)
    dtype = p.dtype if value.is_floating_point() and key != "step" else value.dtype
    if isinstance(current, Tensor) and current.shape == value.shape and current.dtype == dtype \
            and current.device == backend.device_of(src):
        backend.array_module(current._data).copyto(current._data, src, casting="unsafe")
        return current
    return Tensor._make(src.astype(dtype, copy=True))


def _host_scalar(x):
    """A 0-d float32 host tensor: PyTorch keeps optimizer step counts this way."""
    return Tensor._make(np.array(x, dtype=np.float32))
