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
    _draw_nodes(canvas, g, graph, [n for n in order if kept(n)], sizes, detail)
    for dst, incoming in edges.items():
        for (src, delay), path in incoming.items():
            canvas.edge(src, dst, path.label(delay), delay=delay is not None)
    _level_initials(canvas, g, edges)
    return canvas.dot, len(canvas.ids)


def _level_initials(canvas: Canvas, g: nx.DiGraph, edges: dict) -> None:
    """Draw each initial value ``h[-1]`` level with the ``h[0]`` it feeds.

    Its only edge is a delayed one, which does not constrain the layout; an invisible edge from a same-step
    source of ``h[0]`` (``x[0]``) puts it on ``h[0]``'s rank.
    """
    for dst, incoming in edges.items():
        starts = [src for (src, delay) in incoming if delay and g.nodes[src]["op"] == "initial"
                  and not edges.get(src)]
        below = next((src for (src, delay) in incoming if not delay), None)
        for src in starts if below is not None else ():
            canvas.dot.edge(canvas.node_id(below), canvas.node_id(src), style="invis")


def _cluster_key(d: dict, sizes: dict):
    """The step (or grid cell) a node is drawn in, or None for nodes outside the steps."""
    index = d["index"]
    if not index or d["op"] == "initial":
        return None
    if any(not 0 <= k < sizes[a] for a, k in index.items()):
        return None
    return tuple((a.order, a.name, k) for a, k in sorted(index.items(), key=lambda p: p[0].order))


def _draw_nodes(canvas: Canvas, g: nx.DiGraph, graph, kept: list, sizes: dict, detail: bool) -> None:
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
