"""Optimizers (neon's momentum SGD, Adam), global-norm gradient clipping and learning-rate schedules.

Optimizers update a dict of numpy arrays in place and keep their state as plain arrays (``state_dict``), so a
checkpoint restores them exactly.
"""
from __future__ import annotations

import math

import numpy as np


def clip_global_norm(grads: dict, max_norm: float | None) -> tuple[dict, float]:
    """Scale every gradient by :math:`\\min(1, c / \\lVert g \\rVert_2)` where :math:`\\lVert g \\rVert_2` is the
    norm of all gradients together. Returns (grads, norm before clipping)."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if max_norm is None or norm <= max_norm or norm == 0.0:
        return grads, norm
    scale = max_norm / norm
    return {k: g * scale for k, g in grads.items()}, norm


class Optimizer:
    """Base class: ``step(params, grads, lr)`` updates params in place; ``state_dict`` / ``load_state_dict``."""

    def __init__(self, lr: float):
        self.lr = float(lr)
        self.state: dict[str, np.ndarray] = {}
        self.t = 0

    def state_dict(self) -> dict:
        return {"t": self.t, **{f"state.{k}": v for k, v in self.state.items()}}

    def load_state_dict(self, d: dict) -> None:
        self.t = int(d["t"])
        self.state = {k[len("state."):]: np.array(v) for k, v in d.items() if k.startswith("state.")}


class GradientDescentMomentum(Optimizer):
    """neon's ``GradientDescentMomentum(learning_rate, momentum_coef, wdecay)``:

    .. math:: v \\leftarrow \\mu v - \\eta (\\nabla_w L + \\lambda w),\\qquad w \\leftarrow w + v

    (weight decay :math:`\\lambda` added to the gradient of every param, velocity starts at zero).
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(lr)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)

    def step(self, params: dict, grads: dict, lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        self.t += 1
        for name, g in grads.items():
            w = params[name]
            g = g + self.weight_decay * w if self.weight_decay else g
            v = self.state.get(f"v.{name}")
            v = -lr * g if v is None else self.momentum * v - lr * g
            self.state[f"v.{name}"] = v.astype(w.dtype, copy=False)
            w += self.state[f"v.{name}"]


class Adam(Optimizer):
    """Adam (Kingma & Ba): :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) g`, :math:`v \\leftarrow \\beta_2 v +
    (1-\\beta_2) g^2`, :math:`w \\leftarrow w - \\eta\\, \\hat m / (\\sqrt{\\hat v} + \\epsilon)` with bias-corrected
    :math:`\\hat m = m / (1-\\beta_1^t)`, :math:`\\hat v = v / (1-\\beta_2^t)`; ``weight_decay`` adds
    :math:`\\lambda w` to the gradient."""

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(lr)
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay

    def step(self, params: dict, grads: dict, lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        self.t += 1
        c1, c2 = 1.0 - self.beta1 ** self.t, 1.0 - self.beta2 ** self.t
        for name, g in grads.items():
            w = params[name]
            g = g + self.weight_decay * w if self.weight_decay else g
            m = self.state.get(f"m.{name}", np.zeros_like(w))
            v = self.state.get(f"v.{name}", np.zeros_like(w))
            m = self.beta1 * m + (1 - self.beta1) * g
            v = self.beta2 * v + (1 - self.beta2) * g * g
            self.state[f"m.{name}"], self.state[f"v.{name}"] = m.astype(w.dtype), v.astype(w.dtype)
            w -= (lr * (m / c1) / (np.sqrt(v / c2) + self.eps)).astype(w.dtype)


class StepLR:
    """:math:`\\eta_e = \\eta_0\\, \\gamma^{\\lfloor e / s \\rfloor}` at epoch ``e``."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size, self.gamma = int(step_size), float(gamma)

    def __call__(self, base_lr: float, epoch: int, frac: float = 0.0) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR:
    """:math:`\\eta = \\eta_{min} + \\frac12 (\\eta_0 - \\eta_{min})(1 + \\cos(\\pi\\, e / E))`, ``e`` the (fractional)
    epoch and ``E`` the total."""

    def __init__(self, epochs: int, min_lr: float = 0.0):
        self.epochs, self.min_lr = int(epochs), float(min_lr)

    def __call__(self, base_lr: float, epoch: int, frac: float = 0.0) -> float:
        e = min(epoch + frac, self.epochs)
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * e / self.epochs))
