"""Each pass keeps a graph's meaning (the interpreter agrees before and after) and does its job."""
from __future__ import annotations

import numpy as np
import pytest
from compiled_check import MERGE_ALL
from zoo import ZOO

import rnnc as rc
from rnnc import t
from rnnc.passes import (
    CPU_PIPELINE,
    PIPELINE,
    cse,
    dce,
    fold,
    fuse,
    merge_matmul,
    merge_outer,
    merge_sums,
    prune,
    run_pipeline,
)
from rnnc.passes.merge_matmul import SCAN_MAX_ROWS, merge_matmul_cpu
from rnnc.passes.merge_sums import merge_sums_cpu

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


@pytest.mark.parametrize("name", ["elman", "lstm", "gru", "bidirectional", "renet", "variable_length", "ops_mix",
                                  "stack2"])
@pytest.mark.parametrize("gradient", [False, True])
@pytest.mark.parametrize("pipeline", ["generic", "cpu", "merge_all"])
def test_pipeline_keeps_meaning(name, gradient, pipeline):
    passes = {"generic": PIPELINE, "cpu": CPU_PIPELINE, "merge_all": MERGE_ALL}[pipeline]
    case = ZOO[name]()
    inputs = case.make_inputs(np.random.default_rng(0), T, B, np.float64)
    params = case.params()
    graph = rc.grad(case.model).graph if gradient else case.model.graph
    seen = []
    out = run_pipeline(graph, passes, dump=lambda n, g: seen.append(n))
    assert seen == [n for n, _ in passes]
    _agree(graph, out, inputs, params)


def _lstm_like(loss: bool = False, H: int = 4):
    m = rc.Model("gates")
    x = m.input("x", 3)
    h = m.signal("h", H)
    W = {g: m.param(f"W{g}", (H, 3)) for g in "ab"}
    R = {g: m.param(f"R{g}", (H, H)) for g in "ab"}
    a = rc.sigmoid(W["a"] @ x[t] + R["a"] @ h[t - 1])
    b = rc.tanh(W["b"] @ x[t] + R["b"] @ h[t - 1])
    h[t] = a * b
    m.output("o", h[t])
    if loss:
        m.loss(rc.mse(h[t], m.input("y", H)[t]))
    return m


def _gates_data(seed):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(T, B, 3)), "y": rng.normal(size=(T, B, 4))}


def test_merge_matmul_stacks_shared_operand_products():
    g = _lstm_like().graph
    before = sum(n.op == "matmul" for n in g.nodes)
    after = merge_matmul(cse(g))   # cse first: the two reads of h[t-1] (and of x[t]) become one
    assert before == 4 and sum(n.op == "matmul" for n in after.nodes) == 2
    # on the CPU small per-step products (4 rows each) are merged too, large ones stay apart
    assert sum(n.op == "matmul" for n in merge_matmul_cpu(cse(g)).nodes) == 2
    big = _lstm_like(H=SCAN_MAX_ROWS + 1).graph
    assert sum(n.op == "matmul" for n in merge_matmul_cpu(cse(big)).nodes) == 3     # only the hoisted ones
    rng = np.random.default_rng(0)
    params = _lstm_like().init_params(0, "float64")
    _agree(g, after, {"x": rng.normal(size=(T, B, 3))}, params)


def _count(graph, op):
    return sum(n.op == op for n in graph.nodes)


def test_merge_outer_stacks_weight_and_bias_gradients():
    m = _lstm_like(loss=True)
    g = cse(rc.grad(m).graph)
    after = merge_outer(g)
    # dW_a, dW_b share x; dR_a, dR_b share h[t-1]: four products over all steps become two
    assert _count(g, "outer_sum") == 4 and _count(after, "outer_sum") == 2 and _count(after, "take_rows") == 4
    _agree(g, after, _gates_data(1), m.init_params(0, "float64"))


def test_merge_sums_makes_one_backward_product_per_step():
    m = _lstm_like(loss=True)
    g = cse(rc.grad(m).graph)
    after = merge_sums(g)
    assert _count(merge_sums_cpu(g), "matmul") == _count(after, "matmul")     # small per-step sums merged
    big = cse(rc.grad(_lstm_like(loss=True, H=SCAN_MAX_ROWS + 1)).graph)
    assert merge_sums_cpu(big) is big and _count(merge_sums(big), "matmul") == _count(big, "matmul") - 1
    # the adjoint of h[t-1] reads R_a^T g_a + R_b^T g_b: one product on the stacked adjoints
    assert _count(after, "matmul") == _count(g, "matmul") - 1
    stacked = [n for n in after.nodes if n.op == "concat" and n.batched]
    assert len(stacked) == 1 and len(stacked[0].inputs) == 2
    _agree(g, after, _gates_data(2), m.init_params(0, "float64"))
    # merge_outer then reuses that stack (same order) for the weight gradients
    both = merge_outer(after)
    assert _count(both, "concat") == _count(after, "concat")


def test_fuse_makes_one_node_per_chain():
    g = _lstm_like().graph
    fused = fuse(g)
    ops = [n.op for n in fused.nodes]
    assert "fused" in ops and "sigmoid" not in ops and "tanh" not in ops


def test_relu_mask_is_recomputed_where_the_backward_reads_it():
    """relu's VJP reads the mask off its output, so the bias add fuses into the relu, and the mask (a forward
    value read once, by the backward) fuses into the backward's product instead of being stored between them."""
    m = rc.Model("relu_map")
    x, y = m.input("x", 5, axes=()), m.input("y", 3, axes=())
    W, b, V = m.param("W", (4, 5)), m.param("b", 4), m.param("V", (3, 4))
    m.loss(rc.mse(V @ rc.relu(W @ x + b), y))
    g = cse(rc.grad(m).graph)
    after = fuse(g)
    assert _count(g, "positive") == 1 and _count(after, "positive") == 0
    progs = [[ins[0] for ins in n.attr("prog")] for n in after.nodes if n.op == "fused"]
    assert ["add", "relu"] in progs                                   # forward: bias add + relu, one node
    assert any("positive" in p and "mul" in p for p in progs)         # backward: g * [relu(x) > 0], one node
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((B, 5)), "y": rng.standard_normal((B, 3))}
    _agree(g, after, data, {k: v + 0.3 for k, v in m.init_params(0, "float64").items()})


def test_gate_derivatives_are_recomputed_in_the_reverse_scan():
    """A map's plain arithmetic read only by a later scan (the gate derivative s (1 - s) that the reverse scan
    needs) fuses into the scan's node instead of being stored for all steps; transcendentals stay in the map."""
    from rnnc.passes.fuse import ARITHMETIC
    from rnnc.schedule.schedule import build_schedule

    m = _lstm_like(loss=True)
    g = cse(rc.grad(m).graph)
    after = fuse(g)

    def map_arithmetic_read_by_scans(graph):
        stages = build_schedule(graph)
        stage_of = {n: k for k, s in enumerate(stages) for n in s.nodes}
        readers = {}
        for n in graph.nodes:
            for i in n.inputs:
                readers.setdefault(i, []).append(n)
        return [n for n in graph.nodes if stage_of.get(n) is not None and stages[stage_of[n]].kind == "map"
                and n.op in ARITHMETIC | {"fused"} and n.axes and readers.get(n)
                and all(stages[stage_of[r]].kind == "scan" for r in readers[n] if r in stage_of)
                and (n.op != "fused" or all(op in ARITHMETIC for op, *_ in n.attr("prog")))]

    assert map_arithmetic_read_by_scans(g)             # before: s (1 - s) is computed by a map, for all steps
    assert map_arithmetic_read_by_scans(after) == []
    reverse = [s for s in build_schedule(after) if s.kind == "scan" and s.direction < 0]
    assert any(n.op == "fused" and "sub" in [op for op, *_ in n.attr("prog")] for n in reverse[0].nodes)
    assert _count(after, "sigmoid") + _count(after, "tanh") == 0 and any(
        n.op == "fused" and "sigmoid" in [op for op, *_ in n.attr("prog")] for n in after.nodes)
    _agree(g, after, _gates_data(3), m.init_params(0, "float64"))


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
