"""Unrolling: one node per (value, index) plus initial-value nodes; acyclic; iterative (no recursion)."""
from collections import Counter

import networkx as nx
import numpy as np
import pytest
from zoo import ZOO

import rnnc as rc


def ops(g):
    return Counter(d["op"] for _, d in g.nodes(data=True))


def initials(g):
    return sorted(d["label"] for _, d in g.nodes(data=True) if d["op"] == "initial")


def test_long_elman_unroll_is_iterative_and_acyclic():
    case = ZOO["elman"]()
    T = 10_000
    g = case.model.unroll(t=T)
    assert nx.is_directed_acyclic_graph(g)
    assert len(g) == 10 * T + 8
    assert ops(g)["tanh"] == T and initials(g) == ["h[-1]"]
    delayed = [(u, v) for u, v, d in g.edges(data=True) if d.get("delay") == "t-1"]
    assert len(delayed) == T  # h[k-1] -> W @ h for every k, the first from the initial-value node
    # the rolled interpreter runs as long a sequence without trouble
    rng = np.random.default_rng(0)
    res = rc.interpret(case.model, case.make_inputs(rng, T, 1, np.float64), case.params())
    assert res.outputs["o"].shape == (T, 1, 3) and np.isfinite(res.loss)


@pytest.mark.parametrize("T", [1, 2, 5])
def test_elman_node_counts(T):
    g = ZOO["elman"]().model.unroll(t=T)
    # per step: x, y, U@x, W@h, V@h, 3 adds, tanh, cross-entropy; once: 5 params, h[-1], sum over t, batch mean
    c = ops(g)
    assert (c["matmul"], c["add"], c["tanh"], c["input"]) == (3 * T, 3 * T, T, 2 * T)
    assert (c["param"], c["initial"], c["asum"], c["batch_mean"]) == (5, 1, 1, 1)
    assert len(g) == 10 * T + 8


def test_node_attributes():
    g = ZOO["elman"]().model.unroll(t=3)
    tanh = sorted((d["index"][rc.t], d["label"], d["shape"]) for _, d in g.nodes(data=True) if d["op"] == "tanh")
    assert tanh == [(0, "h[0]", (4,)), (1, "h[1]", (4,)), (2, "h[2]", (4,))]


def test_two_tap_has_two_initial_nodes():
    g = ZOO["two_tap"]().model.unroll(t=4)
    assert initials(g) == ["h[-1]", "h[-2]"]
    delays = Counter(d.get("delay") for _, _, d in g.edges(data=True) if d.get("delay"))
    assert delays == {"t-1": 4, "t-2": 4}
    assert nx.is_directed_acyclic_graph(g)


def test_initial_value_node_reads_its_param():
    g = ZOO["autonomous"]().model.unroll(t=3)
    (init,) = [k for k, d in g.nodes(data=True) if d["op"] == "initial"]
    (src,) = g.predecessors(init)
    assert g.nodes[src]["op"] == "param" and g.nodes[src]["ir"].name == "h0"


def test_encoder_final_state_feeds_decoder_initial_node():
    g = ZOO["encoder_decoder"]().model.unroll(t=3, u=2)
    (init,) = [k for k, d in g.nodes(data=True) if d["op"] == "initial"
               and d["value"] == "d"]
    (src,) = g.predecessors(init)
    assert g.nodes[src]["op"] == "last"
    assert initials(g) == ["d[-1]", "h[-1]"]


def test_bidirectional_reverse_initial_is_past_the_end():
    g = ZOO["bidirectional"]().model.unroll(t=4)
    assert initials(g) == ["f[-1]", "r[4]"]


def test_renet_grid_unroll():
    g = ZOO["renet"]().model.unroll(i=2, j=3)
    assert nx.is_directed_acyclic_graph(g)
    c = ops(g)
    assert c["tanh"] == 4 * 2 * 3 and c["concat"] == 2 * 2 * 3
    assert initials(g) == ["down[-1,0]", "down[-1,1]", "down[-1,2]", "left[0,3]", "left[1,3]",
                           "right[0,-1]", "right[1,-1]", "up[2,0]", "up[2,1]", "up[2,2]"]


def test_unroll_sizes_are_checked():
    m = ZOO["renet"]().model
    with pytest.raises(ValueError, match="'j'"):
        m.unroll(i=2)
    with pytest.raises(ValueError, match="'k'"):
        m.unroll(i=2, j=2, k=2)
