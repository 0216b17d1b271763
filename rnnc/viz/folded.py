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
from rnnc.viz.names import names_of, transposed


def folded_dot(graph: Graph, detail: str = "values", params: bool | None = None, rankdir: str = "BT",
               title: bool = True) -> tuple[graphviz.Digraph, int]:
    """Draw ``graph`` folded; ``detail`` is ``"values"``, ``"cells"`` or ``"ops"`` (see
    :func:`rnnc.viz.to_dot`). Returns the Digraph and its number of nodes."""
    canvas = Canvas(graph.name, rankdir, graph.name if title else None)
    if detail == "ops":
        _detailed(canvas, graph, params is not False)
    else:
        _named_only(canvas, graph, bool(params), cells=detail == "cells")
    return canvas.dot, len(canvas.ids)


def _named_only(canvas: Canvas, graph: Graph, with_params: bool, cells: bool = False) -> None:
    names = names_of(graph)
    named = {n: name for n, name in graph.named().items() if name not in names.hidden}
    drawn = {n: name for n, name in named.items() if with_params or n.op != "param"}
    drawn.update(names.inline)
    edges = _contracted(graph, drawn, names, with_params)
    if cells:
        from rnnc.viz.cells import draw_cells

        draw_cells(canvas, graph, drawn, edges, names)
        return
    for n, name in drawn.items():
        kind = "signal" if n in names.inline else style.value_kind(graph, n, name)
        canvas.node(n, kind, names.of(n, name), style.describe(n))
    grads = set(graph.grads.values())
    for dst, incoming in edges.items():
        if dst not in drawn:
            continue
        if dst.op == "ref":     # an output that is a bare read, e.g. m.output("h_out", h[t])
            incoming = {(graph.value_of(dst), delay_of(dst)): Path()}
        for (src, delay), path in incoming.items():
            read = dst in names.backward and src not in names.backward
            label = "" if read and dst in grads else path.label(delay)   # what ∂L/∂W reads: light, unlabelled
            canvas.edge(src, dst, label, delay=delay is not None and not read, read=read)
    _initial_edges(canvas, graph, drawn, edges)


def _contracted(graph: Graph, drawn: dict, names, with_params: bool) -> dict:
    """Edges between drawn values. A reference to a value the drawing hides (a gradient model's flow
    ``d_h_tm1``) shows what that value is computed from, at the reference's delay: two passes, the first
    finds what each hidden value shows."""
    hidden = {graph.values[v]: v for v in names.hidden}
    inits = set(graph.inits.values())

    def param(n):
        if with_params:
            return None
        if n.op == "transpose" and n.inputs[0].op == "param":
            return transposed(n.inputs[0].name)
        return n.name if n.op == "param" else None

    def run(through: dict) -> dict:
        def source(n):
            if n.op == "ref":
                value, delay = graph.value_of(n), delay_of(n)
                if value in hidden:
                    return {(k, d or delay): p for (k, d), p in through.get(value, {}).items()}
                return value, delay
            return (n, None) if n in drawn else None
        return contract(graph.nodes, lambda n: ((i, None) for i in n.inputs), source, param, reduction_label,
                        lambda n: n in drawn or n in inits or n in hidden)

    edges = run({})
    return run({v: edges.get(v, {}) for v in hidden}) if hidden else edges


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
