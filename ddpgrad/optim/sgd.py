"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

from .. import backend
from ..tensor import Tensor
from .optimizer import Optimizer


class SGD(Optimizer):
    """PyTorch's SGD (same formulas as its ``foreach=False`` path)::

        g = ±grad + weight_decay * p
        buf = g on the first step, then momentum * buf + (1 - dampening) * g
        p -= lr * (g + momentum * buf if nesterov else buf)
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _validate(self, group):
        super()._validate(group)
        if group["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']} (must be >= 0)")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"Nesterov momentum requires a momentum and zero dampening, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _update(self, p, grad, group):
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        maximize, dampening, nesterov = group["maximize"], group["dampening"], group["nesterov"]
        xp = backend.array_module(p._data)
        arrays = [p._data, grad]  # grad is never written: it may be a view into a reducer bucket
        first = False
        if momentum != 0:
            state = self.state.setdefault(p, {})
            if state.get("momentum_buffer") is None:  # first step: the buffer starts as g
                state["momentum_buffer"] = Tensor._make(xp.empty_like(p._data))
                first = True
            arrays.append(state["momentum_buffer"]._data)
        for work, w, grad_part, *rest in self._chunks(p, 2 if weight_decay or maximize else 1, *arrays):
            g = grad_part
            if weight_decay != 0:
                g = xp.multiply(w, weight_decay, out=work[-1])
                (xp.subtract if maximize else xp.add)(g, grad_part, out=g)
            elif maximize:
                g = xp.negative(grad_part, out=work[-1])
            if momentum == 0:
                step = g
            else:
                buf = rest[0]
                if first:
                    buf[...] = g
                else:
                    xp.multiply(buf, momentum, out=buf)
                    xp.add(buf, g if dampening == 0 else xp.multiply(g, 1 - dampening, out=work[0]), out=buf)
                if nesterov:
                    step = xp.multiply(buf, momentum, out=work[0])
                    xp.add(g, step, out=step)
                else:
                    step = buf
            xp.add(w, xp.multiply(step, -lr, out=work[0]), out=w)  # p -= lr * step
