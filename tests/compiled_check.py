"""The one compiled-vs-interpreter check every test uses: ``f.forward`` and ``f.loss_and_grad`` of a compiled
model (CPU or CUDA) equal the reference interpreter's (float64) within a tolerance (:func:`close`); zoo models
compiled once per session; ``MERGE_ALL``, the CPU pipeline with every merge on for small models.

Compiled modules go to one cache folder later runs reuse (``RNNC_CACHE_DIR``, default ``.pytest_cache/rnnc``).
"""
from __future__ import annotations

import os

import numpy as np
from paths import CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

from zoo import ZOO  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc.passes import CPU_PIPELINE, merge_matmul, merge_sums  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-4}
ZOO_NAMES = [n for n in ZOO if n != "autonomous"]

# the CPU pipeline with the scan-size threshold off, so small zoo models exercise every merge
MERGE_ALL = [(n, {"merge_matmul": merge_matmul, "merge_sums": merge_sums}.get(n, fn)) for n, fn in CPU_PIPELINE]


_COMPILED: dict = {}


def compiled(name, dtype):
    """The zoo case ``name`` and its model compiled in ``dtype``, built once per session."""
    key = (name, dtype)
    if key not in _COMPILED:
        case = ZOO[name]()
        _COMPILED[key] = (case, rc.compile(case.model, dtype=dtype))
    return _COMPILED[key]


def close(a, b, tol, atol=None) -> bool:
    """Same shape and max |a - b| <= tol * max(1, max |b|) (relative to the array's scale); with ``atol``, entry
    by entry instead, as numpy's ``allclose``: every |a_k - b_k| <= atol + tol * |b_k| (each small entry right
    too). A NaN anywhere is never close."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    if atol is not None:
        return bool(np.all(np.abs(a - b) <= atol + tol * np.abs(b)))
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    return float(np.abs(a - b).max(initial=0.0)) <= tol * scale


def worst(a, b) -> str:
    """Where ``a`` and ``b`` differ most, for an assertion's message."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return f"shapes {a.shape} != {b.shape}"
    if a.size == 0:
        return "empty"
    d = np.abs(a - b)
    k = np.unravel_index(int(np.nanargmax(d)) if not np.isnan(d).all() else 0, d.shape)
    return f"max |a - b| = {d[k]:.3g} at {tuple(int(i) for i in k)} (a = {a[k]!r}, b = {b[k]!r})"


def assert_grads_match(f, model, inputs, params, tol, *, atol=None, loss_tol=None, call=None, **grad_options):
    """``f.loss_and_grad`` equals the interpreter's gradient model (``rc.grad(model, **grad_options)``): the
    loss (to ``loss_tol``, default ``tol``, relative to its scale), the same gradient names, and every gradient
    within ``tol`` (and ``atol``: see :func:`close`). ``call``: keyword arguments for ``f.loss_and_grad``
    (``to_host=True`` for a CUDA engine)."""
    gref = rc.interpret(rc.grad(model, **grad_options), inputs, params, dtype="float64")
    loss, grads = f.loss_and_grad(inputs, params, **(call or {}))
    assert close(loss, gref.loss, tol if loss_tol is None else loss_tol), ("loss", loss, gref.loss)
    assert set(grads) == set(gref.grads), (sorted(grads), sorted(gref.grads))
    for k, v in gref.grads.items():
        assert close(grads[k], v, tol, atol), (k, worst(grads[k], v))


def assert_matches_interpreter(f, model, inputs, params, tol, *, atol=None, grad_tol=None, grad_atol=None,
                               call=None, **grad_options):
    """``f.forward`` (every output, and the loss) and ``f.loss_and_grad`` equal the interpreter's: outputs within
    ``tol`` (and ``atol``: see :func:`close`), the losses within ``tol`` relative to their scale, gradients within
    ``grad_tol`` and ``grad_atol`` (when neither is given, ``tol`` and ``atol``; ``grad_tol`` alone compares
    gradients relative to their scale). ``call``: keyword arguments for ``f.forward`` and ``f.loss_and_grad``
    (``to_host=True`` for a CUDA engine); ``grad_options`` go to ``rc.grad`` (``wrt=``, ``truncate=``)."""
    ref = rc.interpret(model, inputs, params, dtype="float64")
    out = f.forward(inputs, params, **(call or {}))
    for k, v in ref.outputs.items():
        assert close(out.outputs[k], v, tol, atol), (k, worst(out.outputs[k], v))
    assert close(out.loss, ref.loss, tol), ("loss", out.loss, ref.loss)
    if grad_tol is None and grad_atol is None:
        grad_tol, grad_atol = tol, atol
    assert_grads_match(f, model, inputs, params, tol if grad_tol is None else grad_tol, atol=grad_atol,
                       loss_tol=tol, call=call, **grad_options)
