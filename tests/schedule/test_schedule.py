"""Schedules: maps hoisted out of scans, one scan per recurrence with the right axis and direction."""
import pytest
from zoo import ZOO

import rnnc as rc


def shape(name):
    return [(s.kind, s.axis.name if s.axis else None, s.direction) for s in rc.schedule(ZOO[name]().model)]


FWD, REV = 1, -1


@pytest.mark.parametrize("name,want", [
    ("elman", [("map", None, 0), ("scan", "t", FWD), ("map", None, 0)]),
    ("jordan", [("map", None, 0), ("scan", "t", FWD), ("map", None, 0)]),
    ("lstm", [("map", None, 0), ("scan", "t", FWD), ("map", None, 0)]),
    ("gru", [("map", None, 0), ("scan", "t", FWD), ("map", None, 0)]),
    ("two_tap", [("map", None, 0), ("scan", "t", FWD), ("map", None, 0)]),
    ("autonomous", [("scan", "t", FWD), ("map", None, 0)]),
    ("stack2", [("map", None, 0), ("scan", "t", FWD), ("map", None, 0), ("scan", "t", FWD), ("map", None, 0)]),
    ("encoder_decoder", [("map", None, 0), ("scan", "t", FWD), ("map", None, 0), ("scan", "u", FWD),
                         ("map", None, 0)]),
])
def test_stage_sequence(name, want):
    assert shape(name) == want


def test_elman_stages_hold_the_right_work():
    case = ZOO["elman"]()
    sched = rc.schedule(case.model)
    pre, scan, post = sched
    named = case.model.graph.named()
    mat_params = lambda st: {n.inputs[0].name for n in st.nodes if n.op == "matmul"}  # noqa: E731
    assert mat_params(pre) == {"U"} and mat_params(scan) == {"W"} and mat_params(post) == {"V"}
    assert "h" in {named.get(n) for n in scan.nodes}
    assert case.model.graph.loss in post.nodes and case.model.graph.outputs["o"] in post.nodes
    text = str(sched)
    assert "scan t forward" in text and "h = tanh(" in text and "W @ h[t-1]" in text


def test_renet_block_scans_i_both_ways_then_j_both_ways():
    stages = shape("renet")
    scans = [s for s in stages if s[0] == "scan"]
    assert sorted(scans[:2], key=lambda s: -s[2]) == [("scan", "i", FWD), ("scan", "i", REV)]
    assert sorted(scans[2:], key=lambda s: -s[2]) == [("scan", "j", FWD), ("scan", "j", REV)]
    k_i = max(k for k, s in enumerate(stages) if s[1] == "i")
    k_j = min(k for k, s in enumerate(stages) if s[1] == "j")
    assert [s[0] for s in stages[k_i + 1:k_j]] == ["map"], "one map (the concat) between the i and j scans"
    text = str(rc.schedule(ZOO["renet"]().model))
    assert "scan i forward, parallel over j" in text and "scan j reverse, parallel over i" in text
    assert "concat(down[i,j], up[i,j])" in text


def test_bidirectional_has_independent_forward_and_reverse_scans():
    stages = shape("bidirectional")
    assert stages[0][0] == "map" and stages[-1][0] == "map"
    assert sorted(s[1:] for s in stages if s[0] == "scan") == [("t", REV), ("t", FWD)]
    assert "scan t reverse" in str(rc.schedule(ZOO["bidirectional"]().model))


def test_every_node_is_scheduled_exactly_once():
    for name in ZOO:
        m = ZOO[name]().model
        sched = rc.schedule(m)
        seen = [n for s in sched for n in s.nodes]
        assert len(seen) == len(set(seen)), name
        work = {n for n in m.graph.nodes if n.op not in ("input", "param", "const", "lengths")}
        assert work == set(seen), name


def test_stages_respect_dependencies():
    for name in ZOO:
        m = ZOO[name]().model
        g = m.graph
        stage_of = {n: k for k, s in enumerate(rc.schedule(m)) for n in s.nodes}
        for n in stage_of:
            for i in n.inputs:
                assert stage_of.get(i, -1) <= stage_of[n], (name, n, i)
            if n.op == "ref" and not n.attr("offset"):
                assert stage_of.get(g.value_of(n), -1) <= stage_of[n], (name, n)


def test_a_signal_without_recurrence_is_a_map():
    m = rc.Model("m")
    x = m.input("x", 2)
    s = m.signal("s", 2)
    s[rc.t] = rc.tanh(x[rc.t - 1] + x[rc.t])
    m.output("o", s[rc.t] * 2.0)
    assert [st.kind for st in rc.schedule(m)] == ["map"]
