"""Models that exercise every op with a scalar form, and the embedding and layer-norm ops, for the op table tests
(tests/ops/test_op_table.py on the CPU, tests/cuda_sim/test_op_table_cuda.py in the CUDA simulator).

``scalar_model()`` puts each scalar-form op in a scan of its own, ``h_<op>[t] = 0.5 h_<op>[t-1] + op(args)``,
with operands ``a_k x[t] + b_k`` (params ``a_k``, ``b_k``) mapped into the op's domain, so every op is fused
into a scan body and differentiated through. ``lookup_model()`` embeds integer tokens and layer-normalises a
tanh recurrence over them.
"""
from __future__ import annotations

import numpy as np

import rnnc as rc
from rnnc import t
from rnnc.ops import OPS

T, B, D, V = 3, 2, 2, 5

#: compiled (CPU or CUDA, float64) against the interpreter, entry by entry (``compiled_check.close`` with atol):
#: outputs and losses to 1e-10, gradients to 1e-9
OP_TOL = {"tol": 1e-10, "atol": 1e-12, "grad_tol": 1e-9, "grad_atol": 1e-11}

#: op -> how each operand is made from the raw ``a_k x + b_k``: into the op's domain, away from kinks' ties
DOMAIN = {
    "log": ("pos",), "sqrt": ("pos",), "div": ("raw", "pos"), "pow": ("pos", "raw"),
    "clip": ("raw", "low", "high"), "where": ("raw", "raw", "raw"),
}


def scalar_ops() -> list[str]:
    """Every registered op with a scalar form that a model can apply directly (slice/expand move indices)."""
    return sorted(op for op, s in OPS.items() if s.scalar_cpu is not None and s.elementwise)


def _operand(kind: str, raw):
    if kind == "pos":
        return 0.5 + rc.square(raw)
    if kind == "low":
        return raw * 0.1 - 0.4
    if kind == "high":
        return raw * 0.1 + 0.4
    return raw


def _apply(op: str, operands):
    from rnnc.ops import make

    return make(op, operands)


def scalar_model(ops=None) -> rc.Model:
    m = rc.Model("scalar_ops")
    x = m.input("x", D)
    y = m.input("y", D)
    loss = None
    for op in ops or scalar_ops():
        n = OPS[op].arity
        kinds = DOMAIN.get(op, ("raw",) * n)
        args = []
        for k in range(n):
            a, b = m.param(f"a{k}_{op}", D), m.param(f"b{k}_{op}", D)
            args.append(_operand(kinds[k], a * x[t] + b))
        h = m.signal(f"h_{op}", D)
        h[t] = 0.5 * h[t - 1] + _apply(op, args)
        m.output(f"o_{op}", h[t])
        term = rc.mse(h[t], y[t])
        loss = term if loss is None else loss + term
    m.loss(loss)
    return m


def scalar_data(m: rc.Model, seed: int = 0):
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.normal(size=(T, B, D)), "y": rng.normal(size=(T, B, D))}
    params = {name: rng.uniform(-1.0, 1.0, size=node.shape) for name, node in m.graph.params.items()}
    return inputs, params


def lookup_model() -> rc.Model:
    m = rc.Model("lookup")
    tok = m.input("tok", (), dtype="int")
    y = m.input("y", D)
    E = m.param("E", (V, D))
    W, U = m.param("W", (D, D)), m.param("U", (D, D))
    gain, bias = m.param("gain", D), m.param("bias", D)
    h = m.signal("h", D)
    h[t] = rc.layer_norm(rc.tanh(W @ rc.embedding(E, tok[t]) + U @ h[t - 1]), gain, bias)
    m.output("h", h[t])
    m.loss(rc.mse(h[t], y[t]))
    return m


def lookup_data(m: rc.Model, seed: int = 0):
    rng = np.random.default_rng(seed)
    inputs = {"tok": rng.integers(0, V, size=(T, B)), "y": rng.normal(size=(T, B, D))}
    params = {name: rng.normal(size=node.shape) for name, node in m.graph.params.items()}
    return inputs, params
