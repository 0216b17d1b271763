"""Finite-difference helpers for gradient tests (float64, central differences): the one place tests difference
a loss. ``numeric_grad`` differences one array; ``verify_grad`` asserts given gradients against it entry by
entry; ``check_param_grads`` returns the relative error of ``rc.grad`` per param."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import rnnc as rc


def numeric_grad(loss_fn: Callable[[dict], float], arrays: dict, name: str, eps: float = 1e-6,
                 entries: Sequence[int] | None = None) -> np.ndarray:
    r"""Central differences of ``loss_fn(arrays)`` with respect to ``arrays[name]``, entry by entry.

    .. math:: \partial L / \partial a_k \approx (L(a + \epsilon e_k) - L(a - \epsilon e_k)) / 2\epsilon

    ``arrays[name]`` is changed in place while differencing and restored after each entry. With ``entries``
    (flat indices) only those are differenced and a 1-D array in their order comes back; otherwise an array
    shaped like ``arrays[name]``.
    """
    base = arrays[name]
    idxs = np.ndindex(base.shape) if entries is None else (np.unravel_index(k, base.shape) for k in entries)
    out = []
    for idx in idxs:
        old = base[idx]
        base[idx] = old + eps
        up = loss_fn(arrays)
        base[idx] = old - eps
        down = loss_fn(arrays)
        base[idx] = old
        out.append((up - down) / (2 * eps))
    out = np.asarray(out, dtype=np.float64)
    return out.reshape(base.shape) if entries is None else out


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a|, |b|) over the whole array (0 when both vanish)."""
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return 0.0 if scale == 0 else float(np.abs(a - b).max() / scale)


def verify_grad(loss_fn: Callable[[dict], float], arrays: dict, grads: dict, names: Sequence[str] | None = None,
                eps: float = 1e-6, tol: float = 1e-6, picks: int | None = None, rng=None,
                entries: Sequence[int] | None = None) -> None:
    r"""Assert ``grads[name]`` equals central differences of ``loss_fn`` for each name (default: all of ``arrays``).

    Each gradient has its array's shape, and each checked entry must satisfy
    :math:`|g_k - n_k| \le \mathrm{tol} \cdot \max(1, |n_k|)`. The entries are ``entries`` (flat indices),
    else ``picks`` distinct ones drawn with ``rng`` per name (in ``names`` order), else all of them.
    """
    names = list(names or sorted(arrays))
    assert names, "no arrays to check"
    for name in names:
        assert np.shape(grads[name]) == np.shape(arrays[name]), (name, np.shape(grads[name]), arrays[name].shape)
        size = arrays[name].size
        ks = entries
        if ks is None:
            ks = range(size) if picks is None else rng.choice(size, size=min(picks, size), replace=False)
        ks = list(ks)
        assert ks, (name, "no entries to check")
        num = numeric_grad(loss_fn, arrays, name, eps, ks)
        got = np.asarray(grads[name]).reshape(-1)[ks]
        for k, g, n in zip(ks, got, num):
            assert abs(g - n) <= tol * max(1.0, abs(n)), (name, k, g, n)


def check_param_grads(model, inputs, params, sizes=None, batch=None, eps=1e-6) -> dict:
    """Relative error of rc.grad against central differences, per param (at least one)."""
    assert params, "no params to check"
    res = rc.interpret(rc.grad(model), inputs, params, sizes=sizes, batch=batch)

    def loss(p):
        return rc.interpret(model, inputs, p, sizes=sizes, batch=batch).loss

    params = {k: v.copy() for k, v in params.items()}
    return {k: rel_error(numeric_grad(loss, params, k, eps), res.grads[k]) for k in params}
