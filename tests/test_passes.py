"""Each pass keeps a graph's meaning (the interpreter agrees before and after) and does its job."""
from __future__ import annotations

import numpy as np
import pytest
from zoo import ZOO

import rnnc as rc
from rnnc import t
from rnnc.passes import PIPELINE, cse, dce, fold, fuse, merge_matmul, prune, run_pipeline

T, B = 4, 3


def _agree(graph_a, graph_b, inputs, params):
    ra = rc.interpret(graph_a, inputs, params)
    rb = rc.interpret(graph_b, inputs, params)
    for k in ra.outputs:
        np.testing.assert_allclose(rb.outputs[k], ra.outputs[k], rtol=1e-12, atol=1e-12)
    if ra.loss is not None:
        assert abs(ra.loss - rb.loss) <= 1e-12 * max(1.0, abs(ra.loss))
    for k in ra.grads:
        np.testing.assert_allclose(rb.grads[k], ra.grads[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["elman", "lstm", "gru", "bidirectional", "renet", "variable_length", "ops_mix"])
@pytest.mark.parametrize("gradient", [False, True])
def test_pipeline_keeps_meaning(name, gradient):
    case = ZOO[name]()
    inputs = case.make_inputs(np.random.default_rng(0), T, B, np.float64)
    params = case.params()
    graph = rc.grad(case.model).graph if gradient else case.model.graph
    seen = []
    out = run_pipeline(graph, dump=lambda n, g: seen.append(n))
    assert seen == [n for n, _ in PIPELINE]
    _agree(graph, out, inputs, params)


def _lstm_like():
    m = rc.Model("gates")
    x = m.input("x", 3)
    h = m.signal("h", 4)
    W = {g: m.param(f"W{g}", (4, 3)) for g in "ab"}
    R = {g: m.param(f"R{g}", (4, 4)) for g in "ab"}
    a = rc.sigmoid(W["a"] @ x[t] + R["a"] @ h[t - 1])
    b = rc.tanh(W["b"] @ x[t] + R["b"] @ h[t - 1])
    h[t] = a * b
    m.output("o", h[t])
    return m


def test_merge_matmul_stacks_shared_operand_products():
    g = _lstm_like().graph
    before = sum(n.op == "matmul" for n in g.nodes)
    after = merge_matmul(cse(g))   # cse first: the two reads of h[t-1] (and of x[t]) become one
    assert before == 4 and sum(n.op == "matmul" for n in after.nodes) == 2
    rng = np.random.default_rng(0)
    params = _lstm_like().init_params(0, "float64")
    _agree(g, after, {"x": rng.normal(size=(T, B, 3))}, params)


def test_fuse_makes_one_node_per_chain():
    g = _lstm_like().graph
    fused = fuse(g)
    ops = [n.op for n in fused.nodes]
    assert "fused" in ops and "sigmoid" not in ops and "tanh" not in ops


def test_cse_and_fold():
    m = rc.Model("dup")
    x = m.input("x", 2)
    W = m.param("W", (2, 2))
    m.output("o", rc.tanh(W @ x[t]) + rc.tanh(W @ x[t]) * (2.0 * 0.5))
    g = m.graph
    c = fold(cse(g))
    assert sum(n.op == "matmul" for n in c.nodes) == 1
    assert not any(n.op == "mul" for n in c.nodes)        # 2.0 * 0.5 folds to 1.0, then x * 1 -> x
    params = m.init_params(0, "float64")
    _agree(g, c, {"x": np.random.default_rng(0).normal(size=(T, B, 2))}, params)


def test_dce_and_prune():
    case = ZOO["elman"]()
    g = case.model.graph
    assert dce(g).nodes == g.nodes or len(dce(g).nodes) <= len(g.nodes)
    no_loss = prune(g, loss=False, grads=False)
    assert no_loss.loss is None and "y" not in {n.name for n in no_loss.nodes if n.op == "input"}
