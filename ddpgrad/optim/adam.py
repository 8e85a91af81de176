"""Adam and AdamW (Adam with decoupled weight decay)."""

from __future__ import annotations

from .. import backend
from ..tensor import Tensor
from .optimizer import Optimizer, _host_scalar

class Adam(Optimizer):
    """PyTorch's Adam (same formulas as its ``foreach=False`` path)::

        g = ±grad (+ weight_decay * p, unless decoupled: then p *= 1 - lr * weight_decay)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g  (amsgrad: v_max = max)
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, maximize=False, decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _validate(self, group):
        super()._validate(group)
        if group["eps"] < 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']} (must be >= 0)")
        for i, beta in enumerate(group["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))")

    def _init_state(self, p, group):
        xp = backend.array_module(p._data)
        state = {
            "step": _host_scalar(0.0),
            "exp_avg": Tensor._make(xp.zeros_like(p._data)),
            "exp_avg_sq": Tensor._make(xp.zeros_like(p._data)),
        }
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = Tensor._make(xp.zeros_like(p._data))
        self.state[p] = state
        return state

    def _update(self, p, grad, group):
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        state = self.state.get(p) or self._init_state(p, group)
        step_t = state["step"]._data
        step_t += 1
        step = float(step_t)
        xp = backend.array_module(p._data)
        coupled_decay = weight_decay != 0 and not group["decoupled_weight_decay"]
        decoupled_decay = weight_decay != 0 and group["decoupled_weight_decay"]
        maximize = group["maximize"]
        arrays = [p._data, grad, state["exp_avg"]._data, state["exp_avg_sq"]._data]
        if group["amsgrad"]:
            if "max_exp_avg_sq" not in state:  # amsgrad switched on after the first step
                state["max_exp_avg_sq"] = Tensor._make(xp.zeros_like(p._data))
            arrays.append(state["max_exp_avg_sq"]._data)
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        for work, w, grad_part, m, v, *v_max in self._chunks(p, 2 if coupled_decay or maximize else 1, *arrays):
            s = work[0]
            g = grad_part  # never written: it may be a view into the reducer's bucket
            if coupled_decay:
                g = xp.multiply(w, weight_decay, out=work[1])
                (xp.subtract if maximize else xp.add)(g, grad_part, out=g)
            elif maximize:
                g = xp.negative(grad_part, out=work[1])
            if decoupled_decay:
                xp.multiply(w, 1 - lr * weight_decay, out=w)
            # m = lerp(m, g, 1 - beta1) = m + (1 - beta1) * (g - m)
            xp.subtract(g, m, out=s)
            xp.add(m, xp.multiply(s, 1 - beta1, out=s), out=m)
            # v = beta2 * v + (1 - beta2) * g * g
            xp.multiply(g, 1 - beta2, out=s)
            xp.multiply(s, g, out=s)
            xp.multiply(v, beta2, out=v)
            xp.add(v, s, out=v)
            if v_max:
                v = xp.maximum(v_max[0], v, out=v_max[0])
            denom = xp.sqrt(v, out=s)
            xp.true_divide(denom, bias_correction2_sqrt, out=denom)
            xp.add(denom, eps, out=denom)
            update = xp.true_divide(m, denom, out=s)
            xp.multiply(update, -step_size, out=update)
            xp.add(w, update, out=w)


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr * weight_decay`` before the Adam step)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)
