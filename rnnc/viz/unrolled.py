"""The unrolled drawing: the lecture's "deployed" graph, one column per step, values labelled ``h[2]``, ``h[-1]``.

By default hidden ops are contracted away (see :mod:`rnnc.viz.contract`): the drawing keeps the named
values, the initial values and the per-step losses ``L[t]``, with edges labelled by the params met and,
for edges that came through a delayed reference, the delay (``W, t-1``). ``detail=True`` keeps every node.
Positions come from :mod:`rnnc.viz.layout` (steps left to right in order, inputs at the bottom, a 2-D
recurrence as a grid); Graphviz only draws the pinned nodes and routes the edges (``layout=neato``).
"""
from __future__ import annotations

import graphviz
import networkx as nx

from rnnc.viz import layout, style
from rnnc.viz.canvas import Canvas
from rnnc.viz.contract import contract
from rnnc.viz.names import Names, names_of, transposed


def unrolled_dot(g: nx.DiGraph, detail: bool = False, params: bool | None = None, title: bool = True,
                 max_steps: int | None = 8) -> tuple[graphviz.Digraph, int]:
    """Draw an unrolled graph from ``m.unroll(...)``; returns the Digraph and its number of nodes.

    ``max_steps``: an axis with more steps is drawn as its first steps, an ellipsis and its last step
    (None: every step).
    """
    graph = g.graph["graph"]
    names = names_of(graph)
    with_params = detail if params is None else bool(params)
    terms = _loss_terms(g, graph)
    order = list(nx.topological_sort(g))
    keep = _keeper(g, names, with_params, detail, terms)
    edges = contract(order, lambda n: ((p, g.edges[p, n].get("delay")) for p in g.predecessors(n)),
                     lambda n: (n, None) if keep(n) else None, lambda n: _hidden_param(g, n, with_params),
                     lambda n: None, keep)
    axes = {a: layout.Axis(s, max_steps) for a, s in g.graph["sizes"].items()}
    items = {n: _item(g, n, names, terms, detail) for n in order if keep(n)}
    drawn = _elide(items, edges, axes)
    table = layout.place(list(items.values()), [(s, d, delay is not None, label) for s, d, label, delay in drawn], axes)
    steps = ", ".join(f"{a.name}={s}" for a, s in g.graph["sizes"].items())
    canvas = Canvas(graph.name, "BT", f"{graph.name} unrolled ({steps})" if title else None)
    canvas.dot.graph_attr.update(layout="neato", inputscale="72", splines="true", outputorder="edgesfirst")
    for it in table.items.values():
        _draw(canvas, g, graph, names, it, detail)
    for k, (text, x, y) in enumerate(table.labels):
        canvas.dot.node(f"step{k}", label=text, shape="plaintext", style="", fontsize="11",
                        fontcolor="#777777", pos=f"{x:.1f},{y:.1f}!")
    backward = {key for key, it in items.items() if it.role != "ellipsis" and g.nodes[key]["ir"] in names.backward}
    grads = set(graph.grads.values())
    for src, dst, label, delay in drawn:
        read = dst in backward and src not in backward     # a gradient reading a forward value
        init = items[dst].role == "initial"
        kind = "read" if read else "delay" if delay else "initial" if init else "step"
        label = "" if read and g.nodes[dst]["ir"] in grads else label
        if label and abs(items[src].y - items[dst].y) < 1:
            label += "\\n"      # Graphviz centres a label on its edge: an empty second line lifts it above
        canvas.edge(src, dst, label, delay=delay is not None, init=init, read=read,
                    **{"class": f"{kind} {delay}" if delay else kind})
    return canvas.dot, len(canvas.ids)


def _keeper(g: nx.DiGraph, names: Names, with_params: bool, detail: bool, terms: dict):
    nodes = g.nodes

    def keep(n) -> bool:
        d = nodes[n]
        if d["op"] in ("param", "initial"):
            return with_params if d["op"] == "param" else d["value"] not in names.hidden or detail
        if d["value"] is not None and d["value"] in names.hidden:
            return detail
        return detail or d["value"] is not None or n in terms or d["ir"] in names.inline
    return keep


def _hidden_param(g: nx.DiGraph, n, with_params: bool) -> str | None:
    """A param not drawn as a node is collected into edge labels (``Wᵀ`` when read transposed)."""
    d = g.nodes[n]
    if d["op"] == "param" and not with_params:
        return d["value"]
    if d["op"] == "transpose" and not with_params:
        (p,) = g.predecessors(n)
        if g.nodes[p]["op"] == "param":
            return transposed(g.nodes[p]["value"])
    return None


def _loss_terms(g: nx.DiGraph, graph) -> dict:
    """Per-step losses: unnamed per-step nodes summed over an axis on the way to the loss -> their label."""
    if graph.loss is None:
        return {}
    root = next((n for n in g if g.nodes[n]["ir"] is graph.loss and g.nodes[n]["op"] != "initial"), None)
    if root is None:
        return {}
    towards, stack = {root}, [root]
    while stack:
        for p in g.predecessors(stack.pop()):
            if p not in towards and g.nodes[p]["value"] is None and g.nodes[p]["op"] not in ("param", "initial"):
                towards.add(p)
                stack.append(p)
    found, below = {}, set()      # below: partial sums of per-step losses (a grid's row sums)
    for n in nx.topological_sort(g.subgraph(towards)):
        d = g.nodes[n]
        if any(p in found or p in below for p in g.predecessors(n)):
            below.add(n)
        elif d["index"] and any(s in towards and len(g.nodes[s]["index"]) < len(d["index"])
                                for s in g.successors(n)):
            found[n] = d["ir"]
    kinds = sorted({ir.id for ir in found.values()})
    return {n: "L" if len(kinds) == 1 else f"L{kinds.index(ir.id) + 1}" for n, ir in found.items()}


def _label(base: str, index: dict) -> str:
    return f"{base}[{','.join(str(k) for k in index.values())}]" if index else base


def _item(g: nx.DiGraph, n, names: Names, terms: dict, detail: bool) -> layout.Item:
    d = g.nodes[n]
    index = dict(sorted(d["index"].items(), key=lambda p: p[0].order))
    if n in terms:
        label = _label(terms[n], index)
    elif d["value"] is not None:
        label = _label(names.of(d["ir"], d["value"]) if d["op"] != "initial" else d["value"], index)
    elif d["ir"] in names.inline:
        label = _label(names.inline[d["ir"]], index)
    else:
        label = style.op_label(d["ir"])
    value = ("term", d["ir"].id) if n in terms else d["value"] if d["value"] is not None else d["ir"].id
    if d["op"] == "initial":
        role = "initial"
    elif index:
        role = "value"
    else:
        role = "source" if not g.in_degree(n) else "free"
    return layout.Item(n, value, tuple(index), tuple(index.values()), role, label, loss_term=n in terms,
                       backward=d["ir"] in names.backward)


def _elide(items: dict, edges: dict, axes: dict) -> list[tuple]:
    """Drop the items of steps hidden behind an ellipsis; an edge with one hidden end ends at an ellipsis
    item in the hidden item's row. Returns the drawn edges ``(src, dst, label, delay or None)``."""
    hidden = {key for key, it in items.items()
              if it.role == "value" and any(axes[a].slot(k) is None for a, k in zip(it.axes, it.index))}

    def stand_in(key):
        it = items[key]
        index = tuple(None if axes[a].slot(k) is None else k for a, k in zip(it.axes, it.index))
        dots = ("…", it.value, index)
        if dots not in items:
            items[dots] = layout.Item(dots, it.value, it.axes, index, "ellipsis", "⋯")
        return dots

    drawn = {}
    for dst, incoming in edges.items():
        for (src, delay), path in incoming.items():
            if src not in items or dst not in items or (src in hidden and dst in hidden):
                continue
            a = stand_in(src) if src in hidden else src
            b = stand_in(dst) if dst in hidden else dst
            drawn.setdefault((a, b, delay), path.label(delay))
    for key in hidden:
        del items[key]
    return [(a, b, label, delay) for (a, b, delay), label in drawn.items()]


def _draw(canvas: Canvas, g: nx.DiGraph, graph, names: Names, it: layout.Item, detail: bool) -> None:
    """One node at its place; its SVG/JSON class says what it is and where: ``value t_0``, ``initial t_-1``,
    ``value i_0 j_1``, ``ellipsis t_…``, ``loss value t_2``, ``free``."""
    steps = " ".join(f"{a.name}_{'…' if k is None else k}" for a, k in zip(it.axes, it.index))
    role = f"loss {it.role}" if it.loss_term else it.role
    pos = {"pos": f"{it.x:.1f},{it.y:.1f}!", "class": f"{role} {steps}".strip()}
    if it.role == "ellipsis":
        canvas.dot.node(canvas.node_id(it.key), label=it.label, shape="plaintext", style="", fontsize="18",
                        **pos)
        return
    d = g.nodes[it.key]
    node = d["ir"]
    if d["op"] == "initial":
        kind = "initial"
    elif d["op"] == "param":
        kind = "param"
    elif it.loss_term:
        kind = "loss"
    elif d["value"] is not None:
        kind = style.value_kind(graph, node, d["value"])
    else:
        kind = "signal" if node in names.inline else "op"
    sub = style.defining_op(node) if detail and d["value"] is not None and d["op"] != "initial" else ""
    canvas.node(it.key, kind, it.label, style.describe(node), sub=sub, **pos)
