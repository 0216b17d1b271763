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
                 title: bool = True) -> tuple[graphviz.Digraph, int]:
    """Draw an unrolled graph from ``m.unroll(...)``; returns the Digraph and its number of nodes."""
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
    canvas = Canvas(graph.name, rankdir, f"{graph.name} unrolled ({steps})" if title else None)
    clusters = _draw_nodes(canvas, g, graph, [n for n in order if kept(n)], sizes, detail)
    for dst, incoming in edges.items():
        for (src, delay), path in incoming.items():
            canvas.edge(src, dst, path.label(delay), delay=delay is not None)
    _arrange(canvas, g, edges, clusters, sizes)
    return canvas.dot, len(canvas.ids)


def _arrange(canvas: Canvas, g: nx.DiGraph, edges: dict, clusters: dict, sizes: dict) -> None:
    """Rank hints (``newrank``): the cells of a row (one per index of the last axis) side by side in index
    order with their inputs on one rank, the rows (the other axes) stacked bottom to top, and each initial
    value placed before (or after, for reverse scans) the cell it feeds."""
    rows: dict = {}
    for key in sorted(k for k in clusters if k is not None):
        rows.setdefault(key[:-1], []).append(clusters[key])
    last = max(sizes, key=lambda a: a.order) if sizes else None
    for cells in rows.values():
        inputs = [[n for n in members if g.nodes[n]["op"] == "input"] for members in cells]
        _same_rank(canvas, [n for group in inputs for n in group])
        firsts = [group[0] for group in inputs if group]
        for a, b in zip(firsts, firsts[1:]):
            _invisible(canvas, a, b)
    ordered = sorted(rows)
    for below, above in zip(ordered, ordered[1:]):
        tops = [n for m in rows[below] for n in _ends(g, m, top=True)]
        bottoms = [n for m in rows[above] for n in _ends(g, m, top=False)]
        for a, b in zip(tops, bottoms):
            _invisible(canvas, a, b)
    partner: dict = {}
    for dst, incoming in edges.items():
        for src, _ in incoming:
            if g.nodes[src]["op"] == "initial" and g.nodes[dst]["op"] != "initial":
                same = g.nodes[dst]["value"] == g.nodes[src]["value"]
                if src not in partner or (same and not partner[src][1]):
                    partner[src] = (dst, same)
    for init, (dst, _) in partner.items():
        _place_initial(canvas, g, init, dst, last)


def _place_initial(canvas: Canvas, g: nx.DiGraph, init, dst, last) -> None:
    before = any(k < 0 for k in g.nodes[init]["index"].values())
    along = [a for a, k in g.nodes[init]["index"].items() if k != g.nodes[dst]["index"].get(a)]
    if along and along[0] is last:
        _same_rank(canvas, [init, dst])
    _invisible(canvas, *((init, dst) if before else (dst, init)))


def _invisible(canvas: Canvas, a, b) -> None:
    canvas.dot.edge(canvas.node_id(a), canvas.node_id(b), style="invis")


def _same_rank(canvas: Canvas, members: list) -> None:
    if len(members) > 1:
        body = "; ".join(canvas.node_id(n) for n in members)
        canvas.dot.body.append(f"\t{{rank=same; {body}}}\n")


def _ends(g: nx.DiGraph, members: list, top: bool) -> list:
    """The nodes of a cell with no successor (``top``) or no predecessor inside the cell."""
    inside = set(members)
    step = g.successors if top else g.predecessors
    return [n for n in members if not any(m in inside for m in step(n))]


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
