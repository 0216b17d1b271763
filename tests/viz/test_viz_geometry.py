"""The geometry of unrolled drawings, read back from Graphviz's own output (``-Tjson``: node positions).

Each drawn node carries a class naming its role and step (``value t_0``, ``initial t_-1``, ``value i_0 j_1``),
so the checks hold for any model: steps left to right in order, the initial state left of step 0 (right of
the last step for a reverse chain), a reverse chain's edges right to left in a row of its own, a grid's
cells ordered down (first axis) and across (last axis). They run on every zoo model and on random models.
"""
from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from random_models import build, specs
from zoo import ZOO

from rnnc.viz import to_dot

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


@dataclass
class Node:
    label: str
    role: str
    steps: dict          # axis name -> index (None: the ellipsis)
    x: float
    y: float

    @property
    def value(self) -> str:
        return self.label.split("[")[0]


def drawing(obj, **options) -> tuple[list[Node], list[tuple[Node, Node, str]]]:
    """The nodes placed by rnnc and the edges ``(tail, head, class)``, as Graphviz laid them out."""
    data = json.loads(to_dot(obj, **options).pipe(format="json"))
    nodes = {}
    for o in data.get("objects", []):
        words = o.get("class", "").split()
        if not words or "pos" not in o:
            continue
        steps = {}
        for w in words:
            m = re.fullmatch(r"(\w+?)_(-?\d+|…)", w)
            if m:
                steps[m.group(1)] = None if m.group(2) == "…" else int(m.group(2))
        role = next(w for w in words if w in ("value", "initial", "ellipsis", "free", "source"))
        x, y = map(float, o["pos"].split(","))
        nodes[o["_gvid"]] = Node(o["label"], role, steps, x, y)
    edges = [(nodes[e["tail"]], nodes[e["head"]], e.get("class", "")) for e in data.get("edges", [])
             if e["tail"] in nodes and e["head"] in nodes]
    return list(nodes.values()), edges


def _slots(nodes: list[Node], axis: str) -> dict:
    """Index -> rank along ``axis``; the ellipsis (None) ranks in the gap between the shown steps."""
    shown = sorted({n.steps[axis] for n in nodes if n.steps.get(axis) is not None and n.role == "value"})
    ranks = {k: float(k) for k in shown}
    gaps = [a for a, b in zip(shown, shown[1:]) if b > a + 1]
    if gaps:
        ranks[None] = gaps[0] + 0.5
    return ranks


def check_geometry(nodes: list[Node], edges: list, sizes: dict) -> None:
    blocks = defaultdict(list)
    for n in nodes:
        if n.steps:
            blocks[tuple(sorted(n.steps))].append(n)
    for key, members in blocks.items():
        axes = sorted(key, key=lambda a: list(sizes).index(a))
        cols = axes[-1]
        cells = defaultdict(list)
        for n in members:
            if n.role in ("value", "ellipsis"):
                cells[tuple(n.steps[a] for a in axes)].append(n)
        ranks = {a: _slots(members, a) for a in axes}
        by_row = defaultdict(dict)
        for index, cell in cells.items():
            rest = index[:-1]
            by_row[rest][ranks[cols][index[-1]]] = cell
        for rest, row in by_row.items():            # step k's nodes all left of step k+1's
            ordered = [row[r] for r in sorted(row)]
            for a, b in zip(ordered, ordered[1:]):
                assert max(n.x for n in a) < min(n.x for n in b), (cols, rest, [n.label for n in a + b])
        if len(axes) == 2:                          # a grid: the first axis runs down
            rows_of = defaultdict(dict)
            for index, cell in cells.items():
                rows_of[index[-1]][ranks[axes[0]][index[0]]] = cell
            for col, column in rows_of.items():
                ordered = [column[r] for r in sorted(column)]
                for a, b in zip(ordered, ordered[1:]):
                    assert min(n.y for n in a) > max(n.y for n in b), (axes, col, [n.label for n in a + b])
        _check_initials(members, axes, sizes)
        _check_rows(members, edges, cols, len(axes))


def _check_initials(members: list[Node], axes: list, sizes: dict) -> None:
    """``h[-1]`` left of every ``h`` (right of them past the last step; above / below a grid's rows)."""
    for init in (n for n in members if n.role == "initial"):
        same = [n for n in members if n.role == "value" and n.value == init.value]
        for a, k in init.steps.items():
            if 0 <= k < sizes[a]:
                continue
            line = [n for n in same if all(n.steps[b] == init.steps[b] for b in axes if b != a)]
            if not line:
                continue
            if a == axes[-1]:
                assert init.x < min(n.x for n in line) if k < 0 else init.x > max(n.x for n in line), init.label
            else:
                assert init.y > max(n.y for n in line) if k < 0 else init.y < min(n.y for n in line), init.label


def _check_rows(members: list[Node], edges: list, cols: str, arity: int) -> None:
    """Delayed edges along the columns' axis: a forward chain points right, a reverse one left; in 1-D
    tables each recurrent value has a row of its own."""
    ids = {id(n) for n in members}
    chains = set()
    for tail, head, cls in edges:
        m = re.search(rf"\bdelay {cols}([+-])\d+", cls)
        if not m or id(tail) not in ids or id(head) not in ids or head.role != "value":
            continue
        if tail.role == "value" and tail.value == head.value:
            assert (head.x > tail.x) == (m.group(1) == "-"), (tail.label, head.label, cls)
            assert tail.y == pytest.approx(head.y), (tail.label, head.label)
        chains.add(head.value)
    if arity != 1:
        return
    for value in chains:
        ys = {round(n.y, 1) for n in members if n.value == value and n.role == "value"}
        assert len(ys) == 1, (value, ys)
        others = [n.label for n in members if n.role == "value" and n.value != value and round(n.y, 1) in ys]
        assert not others, (value, others)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_unrolled_geometry(name):
    case = ZOO[name]()
    sizes = case.sizes(3)
    nodes, edges = drawing(case.model.unroll(**sizes))
    check_geometry(nodes, edges, sizes)
    assert any(n.role == "value" for n in nodes)


def test_long_axis_keeps_order_through_the_ellipsis():
    case = ZOO["bidirectional"]()
    nodes, edges = drawing(case.model.unroll(t=12))
    check_geometry(nodes, edges, {"t": 12})
    shown = sorted({n.steps["t"] for n in nodes if n.role == "value"})
    assert shown == [0, 1, 2, 11]
    dots = [n for n in nodes if n.role == "ellipsis"]
    assert dots and all(max(n.x for n in nodes if n.steps.get("t") == 2) < d.x
                        < min(n.x for n in nodes if n.steps.get("t") == 11) for d in dots)


def test_named_examples():
    """The lecture's figures: h[-1] level with h[0]; inputs below, L[t] above h; the total L right of
    everything; the reverse chain above the forward one; the decoder right of the encoder."""
    nodes, _ = drawing(ZOO["elman"]().model.unroll(t=3))
    at = {n.label: n for n in nodes}
    assert at["h[-1]"].y == at["h[0]"].y and at["h[-1]"].x < at["x[0]"].x
    assert at["x[1]"].y < at["h[1]"].y < at["o[1]"].y < at["L[1]"].y and at["y[1]"].y < at["L[1]"].y
    assert at["L"].x > max(n.x for n in nodes if n.label != "L")
    nodes, _ = drawing(ZOO["encoder_decoder"]().model.unroll(t=3, u=2))
    at = {n.label: n for n in nodes}
    assert at["h[2]"].x < at["d[-1]"].x < at["d[0]"].x < at["d[1]"].x


def test_gradient_model_geometry():
    import rnnc as rc

    gm = rc.grad(ZOO["elman"]().model)
    nodes, edges = drawing(gm.unroll(t=3))
    check_geometry(nodes, edges, {"t": 3})
    labels = {n.label for n in nodes}
    assert {"δh[0]", "δh[2]", "∂L/∂W", "L[1]"} <= labels
    assert not any("d_h" in lab or "grad_" in lab for lab in labels)
    back = [(a.label, b.label) for a, b, cls in edges if cls == "delay t+1"]
    assert ("δh[1]", "δh[0]") in back


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(specs())
def test_random_models_unrolled_geometry(s):
    m = build(s)
    sizes = {"t": s["T"] + 1}
    nodes, edges = drawing(m.unroll(**sizes))
    check_geometry(nodes, edges, sizes)
