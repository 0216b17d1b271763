"""The folded drawing of a model: its named values and the (cyclic) edges between them.

As in the lecture's figures, ``h[t] = tanh(U @ x[t] + W @ h[t-1] + b)`` with ``o = V @ h[t] + c`` is drawn
``x -U-> h -V-> o`` with the recurrence as a dashed back arc ``h -> h`` labelled ``W, t-1``. With
``detail=True`` every IR node is drawn instead (ops as small boxes, params as ellipses), and references
become edges from the value they read, labelled with their delay.
"""
from __future__ import annotations

import graphviz

from rnnc.ir.graph import Graph
from rnnc.ir.node import Node
from rnnc.viz import style
from rnnc.viz.canvas import Canvas, delay_of, reduction_label
from rnnc.viz.contract import Path, contract


def folded_dot(graph: Graph, detail: str = "values", params: bool | None = None, rankdir: str = "BT",
               title: bool = True) -> tuple[graphviz.Digraph, int]:
    """Draw ``graph`` folded; ``detail`` is ``"values"``, ``"cells"`` or ``"ops"`` (see
    :func:`rnnc.viz.to_dot`). Returns the Digraph and its number of nodes."""
    canvas = Canvas(graph.name, rankdir, graph.name if title else None)
    if detail == "ops":
        _detailed(canvas, graph, params is not False)
    else:
        _named_only(canvas, graph, bool(params))
    return canvas.dot, len(canvas.ids)


def _named_only(canvas: Canvas, graph: Graph, with_params: bool) -> None:
    named = graph.named()
    drawn = {n: name for n, name in named.items() if with_params or n.op != "param"}

    def source(n):
        if n.op == "ref":
            return graph.value_of(n), delay_of(n)
        return (n, None) if n in drawn else None

    inits = set(graph.inits.values())
    edges = contract(graph.nodes, lambda n: ((i, None) for i in n.inputs), source,
                     lambda n: n.name if n.op == "param" and not with_params else None,
                     reduction_label, lambda n: n in drawn or n in inits)
    for n, name in drawn.items():
        canvas.node(n, style.value_kind(graph, n, name), name, style.describe(n))
    for dst, incoming in edges.items():
        if dst not in drawn:
            continue
        if dst.op == "ref":     # an output that is a bare read, e.g. m.output("h_out", h[t])
            incoming = {(graph.value_of(dst), delay_of(dst)): Path()}
        for (src, delay), path in incoming.items():
            canvas.edge(src, dst, path.label(delay), delay=delay is not None)
    _initial_edges(canvas, graph, drawn, edges)


def _initial_edges(canvas: Canvas, graph: Graph, drawn: dict, edges: dict) -> None:
    """Dotted edges from each signal's initial value (or what it is computed from) to the signal."""
    for name, init in graph.inits.items():
        signal = graph.values[name]
        if init in drawn:
            canvas.edge(init, signal, "initial", init=True)
        elif init.op == "param":
            canvas.node(init, "param", init.name, style.describe(init))
            canvas.edge(init, signal, "initial", init=True)
        else:
            for (src, delay), path in edges.get(init, {}).items():
                label = path.label(delay)
                canvas.edge(src, signal, f"initial: {label}" if label else "initial", init=True)


def _resolve(graph: Graph, n: Node) -> tuple[Node, str | None]:
    """A reference stands for the defining node of the value it reads, at its delay."""
    if n.op == "ref":
        return graph.value_of(n), delay_of(n)
    return n, None


def _detailed(canvas: Canvas, graph: Graph, with_params: bool) -> None:
    named = graph.named()
    for n in graph.nodes:
        if n.op == "ref" or (n.op == "param" and not with_params):
            continue
        if n in named and n.op != "param":
            canvas.node(n, style.value_kind(graph, n, named[n]), named[n], style.describe(n),
                        sub=style.defining_op(n))
        elif n.op == "param":
            canvas.node(n, "param", n.name, style.describe(n))
        else:
            canvas.node(n, "op", style.op_label(n), style.describe(n))
    inits_done = set()
    for n in graph.nodes:
        if n.op == "ref":
            if n.inputs and n.attr("value") not in inits_done:
                inits_done.add(n.attr("value"))
                src, _ = _resolve(graph, n.inputs[0])
                canvas.edge(src, graph.value_of(n), "initial", init=True)
            continue
        for i in n.inputs:
            src, delay = _resolve(graph, i)
            if src.op == "param" and not with_params:
                continue
            canvas.edge(src, n, delay or "", delay=delay is not None)
