"""``detail="cells"``: a folded drawing with each recurrent cell collapsed into one box.

A *cell* is a group of signals that read one another through their delays (an LSTM's ``C`` and ``h``: a
strongly connected component of the value graph with more than one member); its gate arithmetic is
already contracted away, so one box ``C, h`` stands for the whole step. In a gradient model the adjoints of
a cell form a cell too (``δC, δh``), and the parameter gradients that read the same boxes are one box
``∂L/∂ Wf, Wi, …``. Edges between boxes are labelled with their delay, and with their params when there
are at most two (``V``), so an LSTM's gradient graph fits a page.
"""
from __future__ import annotations

from collections import defaultdict

import networkx as nx

from rnnc.ir.graph import Graph
from rnnc.viz import style
from rnnc.viz.canvas import Canvas, delay_of
from rnnc.viz.contract import Path
from rnnc.viz.names import Names

MAX_PARAMS_ON_EDGE = 2
NAMES_PER_LINE = 4


def draw_cells(canvas: Canvas, graph: Graph, drawn: dict, edges: dict, names: Names) -> None:
    """Draw ``drawn`` (node -> name) with ``edges`` (from :func:`rnnc.viz.contract.contract`) grouped."""
    group = _groups(graph, drawn, edges, names)
    members: dict = defaultdict(list)
    for n in drawn:
        members[group.get(n, n)].append(n)
    for key, nodes in members.items():
        first = nodes[0]
        kind = "signal" if first in names.inline else style.value_kind(graph, first, drawn[first])
        if len(nodes) == 1:
            canvas.node(key, kind, names.of(first, drawn[first]), style.describe(first))
        else:
            attrs = {"shape": "box", "style": "filled,rounded"}
            canvas.node(key, kind, _box_label([names.of(n, drawn[n]) for n in nodes]), "", **attrs)
    merged: dict = {}
    for dst, incoming in edges.items():
        if dst not in drawn:
            continue
        if dst.op == "ref":
            incoming = {(graph.value_of(dst), delay_of(dst)): Path()}
        for (src, delay), path in incoming.items():
            a, b = group.get(src, src), group.get(dst, dst)
            if a == b and delay is None:
                continue
            read = dst in names.backward and src not in names.backward
            params = merged.setdefault((a, b, None if read else delay, read), set())
            params |= path.params | path.via
    for (a, b, delay, read), params in merged.items():
        parts = sorted(params) if len(params) <= MAX_PARAMS_ON_EDGE else []
        label = ", ".join(parts + ([delay] if delay else []))
        canvas.edge(a, b, "" if read else label, delay=delay is not None and not read, read=read)


def _box_label(labels: list[str]) -> str:
    if all(lab.startswith("∂L/∂") for lab in labels):
        rest = [lab[len("∂L/∂"):] for lab in labels]
        lines = [", ".join(rest[k:k + NAMES_PER_LINE]) for k in range(0, len(rest), NAMES_PER_LINE)]
        return "∂L/∂ " + ",\\n".join(lines)
    return ", ".join(labels)


def _groups(graph: Graph, drawn: dict, edges: dict, names: Names) -> dict:
    """node -> group key: cells (strongly connected signals, adjoints apart from forward values), then
    parameter gradients by the groups they read."""
    links = nx.DiGraph()
    links.add_nodes_from(n for n in drawn if n.op not in ("param", "input"))
    for dst, incoming in edges.items():
        for src, _ in incoming:
            if src in links and dst in links and (src in names.backward) == (dst in names.backward):
                links.add_edge(src, dst)
    group = {}
    for k, scc in enumerate(nx.strongly_connected_components(links)):
        if len(scc) > 1:
            order = [n for n in drawn if n in scc]
            for n in order:
                group[n] = ("cell", k)
    grads = {g for g in graph.grads.values() if g in drawn}
    reads: dict = defaultdict(list)
    for g in grads:
        seen = frozenset(group.get(src, src) for src, _ in edges.get(g, {}))
        reads[seen].append(g)
    for k, same in enumerate(reads.values()):
        if len(same) > 1:
            for g in same:
                group[g] = ("grads", k)
    return group
