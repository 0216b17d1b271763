"""The unrolled drawing: one cluster per step (per grid cell), values labelled ``h[2]``, ``h[-1]``.

By default hidden ops are contracted away (see :mod:`rnnc.viz.contract`): the drawing keeps the named
values, the inputs and the initial values, with edges labelled by the params met and, for edges that came
through a delayed reference, the delay (``W, t-1``), as in the lecture's unrolled ("deployed") figures.
``detail=True`` keeps every node.
"""
from __future__ import annotations

import graphviz
import networkx as nx

from rnnc.viz import style
from rnnc.viz.canvas import Canvas
from rnnc.viz.contract import contract


def unrolled_dot(g: nx.DiGraph, detail: bool = False, params: bool | None = None, rankdir: str = "BT",
                 title: bool = True, hints: bool = True, loose_delays: bool = True
                 ) -> tuple[graphviz.Digraph, int]:
    """Draw an unrolled graph from ``m.unroll(...)``; returns the Digraph and its number of nodes.

    ``hints`` adds invisible layout edges (cells in index order, initial values level with what they feed);
    ``loose_delays`` keeps delayed edges out of the ranking (steps side by side rather than a staircase).
    """
    graph = g.graph["graph"]
    sizes = g.graph["sizes"]
    with_params = detail if params is None else bool(params)
    nodes = g.nodes

    def kept(n) -> bool:
        d = nodes[n]
        if d["op"] == "param":
            return with_params
        return detail or d["op"] == "initial" or d["value"] is not None

    def param(n):
        d = nodes[n]
        return d["value"] if d["op"] == "param" and not with_params else None

    order = list(nx.topological_sort(g))
    # reductions are visible in an unrolled drawing (all steps point at the sum), so edges carry no "sum t"
    edges = contract(order, lambda n: ((p, g.edges[p, n].get("delay")) for p in g.predecessors(n)),
                     lambda n: (n, None) if kept(n) else None, param, lambda n: None, kept)
    steps = ", ".join(f"{a.name}={s}" for a, s in sizes.items())
    canvas = Canvas(graph.name, rankdir, f"{graph.name} unrolled ({steps})" if title else None,
                    loose_delays)
    clusters = _draw_nodes(canvas, g, graph, [n for n in order if kept(n)], sizes, detail)
    for dst, incoming in edges.items():
        for (src, delay), path in incoming.items():
            canvas.edge(src, dst, path.label(delay), delay=delay is not None)
    if hints:
        _arrange(canvas, g, edges, clusters, sizes)
    _sinks_on_top(canvas, g, clusters.get(None, []))
    return canvas.dot, len(canvas.ids)


def _sinks_on_top(canvas: Canvas, g: nx.DiGraph, loose: list) -> None:
    """Axis-free results (the loss, gradients) drawn in one row above every step."""
    sinks = [n for n in loose if g.nodes[n]["op"] not in ("initial", "param", "input") and not g.out_degree(n)]
    if len(sinks) > 1:
        with canvas.dot.subgraph() as row:
            row.attr(rank="max" if canvas.dot.graph_attr.get("rankdir", "BT") == "BT" else "min")
            for n in sinks:
                row.node(canvas.node_id(n))


def _arrange(canvas: Canvas, g: nx.DiGraph, edges: dict, clusters: dict, sizes: dict) -> None:
    """Layout hints, all invisible edges: a hidden *spine* node below everything whose ordered out-edges
    (``ordering=out``) set the cells left to right in index order (grid cells row by row), with each
    initial value ``h[-1]`` level with the ``h[0]`` it feeds, before the cells (after them for reverse
    scans)."""
    cells = [clusters[k] for k in sorted(k for k in clusters if k is not None)]
    if not cells:
        return
    last = max(sizes, key=lambda a: a.order)
    before, after = _initials(g, edges, last)
    canvas.dot.node("spine", shape="point", width="0", height="0", style="invis", ordering="out", label="")
    for init, dst in before:
        _invisible(canvas, "spine", init, minlen=_level(edges, dst, clusters) + 1)
    for cell in cells:
        for n in _ends(edges, cell):
            _invisible(canvas, "spine", n)
    for init, dst in after:
        _invisible(canvas, "spine", init, minlen=_level(edges, dst, clusters) + 1)


def _initials(g: nx.DiGraph, edges: dict, last) -> tuple[list, list]:
    """Initial values read along the last axis, each with the node it feeds (the same value's, if any),
    split into those read before the first index and after the last one."""
    partner: dict = {}
    for dst, incoming in edges.items():
        for src, _ in incoming:
            if g.nodes[src]["op"] == "initial" and g.nodes[dst]["op"] != "initial":
                same = g.nodes[dst]["value"] == g.nodes[src]["value"]
                if src not in partner or (same and not partner[src][1]):
                    partner[src] = (dst, same)
    before, after = [], []
    for init, (dst, _) in partner.items():
        index = g.nodes[init]["index"]
        along = [a for a, k in index.items() if k != g.nodes[dst]["index"].get(a)]
        if along and along[0] is last:
            (before if index[last] < 0 else after).append((init, dst))
    return before, after


def _level(edges: dict, n, clusters: dict) -> int:
    """Longest path of drawn, undelayed edges to ``n`` from the bottom of its cell (inputs: level 0)."""
    cell = next((set(m) for k, m in clusters.items() if k is not None and n in m), {n})
    level, frontier = 0, {n}
    while level <= len(cell):
        frontier = {s for f in frontier for (s, delay) in edges.get(f, {}) if s in cell and not delay}
        if not frontier:
            break
        level += 1
    return level


def _invisible(canvas: Canvas, a, b, minlen: int = 1) -> None:
    ids = [x if x == "spine" else canvas.node_id(x) for x in (a, b)]
    canvas.dot.edge(*ids, style="invis", **({"minlen": str(minlen)} if minlen != 1 else {}))


def _ends(edges: dict, members: list) -> list:
    """The nodes of a cell that no undelayed drawn edge inside the cell enters (its bottom)."""
    inside = set(members)
    return [n for n in members if not any(s in inside and not d for (s, d) in edges.get(n, {}))]


def _cluster_key(d: dict, sizes: dict):
    """The step (or grid cell) a node is drawn in, or None for nodes outside the steps."""
    index = d["index"]
    if not index or d["op"] == "initial":
        return None
    if any(not 0 <= k < sizes[a] for a, k in index.items()):
        return None
    return tuple((a.order, a.name, k) for a, k in sorted(index.items(), key=lambda p: p[0].order))


def _draw_nodes(canvas: Canvas, g: nx.DiGraph, graph, kept: list, sizes: dict, detail: bool) -> dict:
    clusters: dict = {}
    for n in kept:
        clusters.setdefault(_cluster_key(g.nodes[n], sizes), []).append(n)
    for key in sorted(clusters, key=lambda k: (k is not None, k or ())):
        if key is None:
            for n in clusters[key]:
                _node(canvas, g, graph, n, detail)
            continue
        name = "cluster_" + "_".join(f"{a}{k}" for _, a, k in key)
        with canvas.dot.subgraph(name=name) as sub:
            sub.attr(label=", ".join(f"{a} = {k}" for _, a, k in key), style="rounded,filled",
                     color="#cccccc", fillcolor="#fafafa", fontsize="11", fontcolor="#666666")
            for n in clusters[key]:
                _node(canvas, g, graph, n, detail, into=sub)
    return clusters


def _node(canvas: Canvas, g: nx.DiGraph, graph, n, detail: bool, into=None) -> None:
    d = g.nodes[n]
    node = d["ir"]
    sub = style.defining_op(node) if detail and d["value"] is not None and d["op"] != "initial" else ""
    if d["op"] == "initial":
        kind, label = "initial", d["label"]
    elif d["op"] == "param":
        kind, label = "param", d["label"]
    elif d["value"] is not None:
        kind, label = style.value_kind(graph, node, d["value"]), d["label"]
    else:
        kind, label = "op", style.op_label(node)
    canvas.node(n, kind, label, style.describe(node), into=into, sub=sub)
