"""Finite-difference helpers for gradient tests (float64, central differences)."""
from __future__ import annotations

import numpy as np

import rnnc as rc


def numeric_grad(loss_fn, arrays: dict, name: str, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``loss_fn(arrays)`` with respect to ``arrays[name]``, entry by entry."""
    base = arrays[name]
    out = np.zeros_like(base, dtype=np.float64)
    for idx in np.ndindex(base.shape):
        old = base[idx]
        base[idx] = old + eps
        up = loss_fn(arrays)
        base[idx] = old - eps
        down = loss_fn(arrays)
        base[idx] = old
        out[idx] = (up - down) / (2 * eps)
    return out


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a|, |b|) over the whole array (0 when both vanish)."""
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return 0.0 if scale == 0 else float(np.abs(a - b).max() / scale)


def check_param_grads(model, inputs, params, sizes=None, batch=None, eps=1e-6) -> dict:
    """Relative error of rc.grad against central differences, per param."""
    res = rc.interpret(rc.grad(model), inputs, params, sizes=sizes, batch=batch)

    def loss(p):
        return rc.interpret(model, inputs, p, sizes=sizes, batch=batch).loss

    params = {k: v.copy() for k, v in params.items()}
    return {k: rel_error(numeric_grad(loss, params, k, eps), res.grads[k]) for k in params}
