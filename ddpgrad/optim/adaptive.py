"""RMSprop, Adagrad, Adamax, NAdam and RAdam, with PyTorch's formulas (its ``foreach=False`` path).

Each update reads ``p.grad`` (never writes it: it may be a view into the reducer's bucket) and
writes ``p`` and its state in place. State keys are PyTorch's, so ``state_dict`` has its layout.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor
from .optimizer import Optimizer, _host_scalar


def _zeros_like(p, fill=0.0):
    xp = backend.array_module(p._data)
    return Tensor._make(xp.full_like(p._data, fill))


def _effective_grad(p, grad, group):
    """``±grad + weight_decay * p`` (coupled decay), as a new array."""
    g = -grad if group.get("maximize") else grad
    wd = group.get("weight_decay", 0)
    if wd and not group.get("decoupled_weight_decay", False):
        g = g + wd * p._data
    return g


def _check_betas(group):
    if group["eps"] < 0.0:
        raise ValueError(f"Invalid epsilon value: {group['eps']} (must be >= 0)")
    for i, beta in enumerate(group["betas"]):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))")


def _next_step(state):
    step = state["step"]._data
    step += 1
    return float(step)


class RMSprop(Optimizer):
    """``v = alpha v + (1 - alpha) g²``; ``p -= lr g / (sqrt(v - centered mean²) + eps)``, with optional momentum."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _validate(self, group):
        super()._validate(group)
        if group["eps"] < 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']} (must be >= 0)")
        if group["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']} (must be >= 0)")
        if group["alpha"] < 0.0:
            raise ValueError(f"Invalid alpha value: {group['alpha']} (must be >= 0)")

    def _update(self, p, grad, group):
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {"step": _host_scalar(0.0), "square_avg": _zeros_like(p)}
            if group["momentum"] > 0:
                state["momentum_buffer"] = _zeros_like(p)
            if group["centered"]:
                state["grad_avg"] = _zeros_like(p)
        _next_step(state)
        xp = backend.array_module(p._data)
        alpha, eps, lr = group["alpha"], group["eps"], group["lr"]
        g = _effective_grad(p, grad, group)
        v = state["square_avg"]._data
        v *= alpha
        v += (1 - alpha) * g * g
        if group["centered"]:
            m = state["grad_avg"]._data
            m += (1 - alpha) * (g - m)
            avg = xp.sqrt(v - m * m)
        else:
            avg = xp.sqrt(v)
        avg += eps
        if group["momentum"] > 0:
            buf = state.setdefault("momentum_buffer", _zeros_like(p))._data
            buf *= group["momentum"]
            buf += g / avg
            p._data -= lr * buf
        else:
            p._data -= lr * (g / avg)


class Adagrad(Optimizer):
    """``s += g²``; ``p -= lr / (1 + (t - 1) lr_decay) · g / (sqrt(s) + eps)``."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))
        for group in self.param_groups:  # PyTorch creates the state at construction
            for p in group["params"]:
                self.state[p] = {"step": _host_scalar(0.0),
                                 "sum": _zeros_like(p, group["initial_accumulator_value"])}

    def _validate(self, group):
        super()._validate(group)
        if group["lr_decay"] < 0.0:
            raise ValueError(f"Invalid lr_decay value: {group['lr_decay']} (must be >= 0)")
        if group["initial_accumulator_value"] < 0.0:
            raise ValueError(f"Invalid initial_accumulator_value value: {group['initial_accumulator_value']}")
        if group["eps"] < 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']} (must be >= 0)")

    def _update(self, p, grad, group):
        state = self.state.setdefault(p, {"step": _host_scalar(0.0),
                                          "sum": _zeros_like(p, group["initial_accumulator_value"])})
        step = _next_step(state)
        xp = backend.array_module(p._data)
        g = _effective_grad(p, grad, group)
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        s = state["sum"]._data
        s += g * g
        p._data -= clr * (g / (xp.sqrt(s) + group["eps"]))


class Adamax(Optimizer):
    """Adam with the infinity norm: ``u = max(beta2 u, |g| + eps)``; ``p -= lr / (1 - beta1^t) · m / u``."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))

    def _validate(self, group):
        super()._validate(group)
        _check_betas(group)

    def _update(self, p, grad, group):
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {"step": _host_scalar(0.0), "exp_avg": _zeros_like(p),
                                     "exp_inf": _zeros_like(p)}
        step = _next_step(state)
        xp = backend.array_module(p._data)
        beta1, beta2 = group["betas"]
        g = _effective_grad(p, grad, group)
        m, u = state["exp_avg"]._data, state["exp_inf"]._data
        m += (1 - beta1) * (g - m)
        xp.maximum(u * beta2, xp.abs(g) + group["eps"], out=u)
        p._data -= (group["lr"] / (1 - beta1**step)) * (m / u)


class NAdam(Optimizer):
    """Adam with Nesterov momentum and the momentum schedule ``mu_t = beta1 (1 - 0.96^(t psi) / 2)``."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize))

    def _validate(self, group):
        super()._validate(group)
        _check_betas(group)
        if group["momentum_decay"] < 0.0:
            raise ValueError(f"Invalid momentum_decay value: {group['momentum_decay']} (must be >= 0)")

    def _update(self, p, grad, group):
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {"step": _host_scalar(0.0), "mu_product": _host_scalar(1.0),
                                     "exp_avg": _zeros_like(p), "exp_avg_sq": _zeros_like(p)}
        step = _next_step(state)
        xp = backend.array_module(p._data)
        lr, eps, wd, psi = group["lr"], group["eps"], group["weight_decay"], group["momentum_decay"]
        beta1, beta2 = group["betas"]
        if wd and group["decoupled_weight_decay"]:
            p._data *= 1 - lr * wd
        g = _effective_grad(p, grad, group)
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * psi))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * psi))
        product = state["mu_product"]._data  # float32, as PyTorch keeps it
        product *= np.float32(mu)
        mu_product = float(product)
        m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
        m += (1 - beta1) * (g - m)
        v *= beta2
        v += (1 - beta2) * g * g
        denom = xp.sqrt(v / (1 - beta2**step)) + eps
        mu_product_next = mu_product * mu_next
        p._data += (-lr * (1.0 - mu) / (1.0 - mu_product)) * (g / denom)
        p._data += ((-lr * mu_next) / (1.0 - mu_product_next)) * (m / denom)


class RAdam(Optimizer):
    """Rectified Adam: plain momentum SGD until the variance estimate is reliable (rho_t > 5), then Adam
    scaled by the rectification term."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize))

    def _validate(self, group):
        super()._validate(group)
        _check_betas(group)

    def _update(self, p, grad, group):
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {"step": _host_scalar(0.0), "exp_avg": _zeros_like(p),
                                     "exp_avg_sq": _zeros_like(p)}
        step = _next_step(state)
        xp = backend.array_module(p._data)
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if wd and group["decoupled_weight_decay"]:
            p._data *= 1 - lr * wd
        g = _effective_grad(p, grad, group)
        m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
        m += (1 - beta1) * (g - m)
        v *= beta2
        v += (1 - beta2) * g * g
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        corrected = m / bias_correction1
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
        if rho_t > 5.0:
            rect = (((rho_t - 4) * (rho_t - 2) * rho_inf) / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            adaptive = bias_correction2**0.5 / (xp.sqrt(v) + eps)
            p._data -= corrected * lr * adaptive * rect
        else:
            p._data -= corrected * lr
