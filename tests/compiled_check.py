"""The compiled-vs-interpreter checks the backend tests share: ``f.forward`` and ``f.loss_and_grad`` of a
compiled model equal the reference interpreter's (float64) within a relative tolerance; zoo models compiled once
per session; ``MERGE_ALL``, the CPU pipeline with every merge on for small models.

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

TOL = {"float64": 1e-10, "float32": 1e-4}


def compiled(name, dtype):
    """The zoo case ``name`` and its model compiled in ``dtype``, built once per session."""
    key = (name, dtype)
    if key not in _COMPILED:
        case = ZOO[name]()
        _COMPILED[key] = (case, rc.compile(case.model, dtype=dtype))
    return _COMPILED[key]


def close(a, b, tol) -> bool:
    """Same shape and max |a - b| <= tol * max(1, max |b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    return a.shape == b.shape and float(np.abs(a - b).max(initial=0.0)) <= tol * scale


def assert_grads_match(f, model, inputs, params, tol, **grad_options):
    """``f.loss_and_grad`` equals the interpreter's gradient model: the loss, the same gradient names, and every
    gradient within ``tol`` (relative, see :func:`close`)."""
    gref = rc.interpret(rc.grad(model, **grad_options), inputs, params, dtype="float64")
    loss, grads = f.loss_and_grad(inputs, params)
    assert close(loss, gref.loss, tol)
    assert set(grads) == set(gref.grads)
    for k, v in gref.grads.items():
        assert close(grads[k], v, tol), k


def assert_matches_interpreter(f, model, inputs, params, tol):
    """``f.forward`` (outputs and loss) and ``f.loss_and_grad`` equal the interpreter's, within ``tol``."""
    ref = rc.interpret(model, inputs, params, dtype="float64")
    out = f.forward(inputs, params)
    for k, v in ref.outputs.items():
        assert close(out.outputs[k], v, tol), k
    assert close(out.loss, ref.loss, tol)
    assert_grads_match(f, model, inputs, params, tol)
