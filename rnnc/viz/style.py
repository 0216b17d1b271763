"""Looks shared by the folded and unrolled drawings: node kinds, colours, fonts, tooltips."""
from __future__ import annotations

import html

FONT = "Helvetica"

# kind -> graphviz node attributes (lecture style: values are circles, the loss a box)
KINDS = {
    "input": {"fillcolor": "#dbe9f6", "color": "#4a78a8"},
    "signal": {"fillcolor": "#fdf1c7", "color": "#b08a1e"},
    "output": {"fillcolor": "#dff2d8", "color": "#4f8a3c"},
    "loss": {"fillcolor": "#f8d4cf", "color": "#b04a3c", "shape": "box", "style": "filled,rounded"},
    "adjoint": {"fillcolor": "#f9dcc0", "color": "#b8661e"},
    "grad": {"fillcolor": "#ecdcf2", "color": "#7a4a8a", "shape": "box", "style": "filled,rounded"},
    "initial": {"fillcolor": "white", "color": "#777777", "style": "dashed", "fontcolor": "#555555"},
    "param": {"fillcolor": "#eeeeee", "color": "#888888", "shape": "ellipse", "fontsize": "11", "width": "0.4",
              "height": "0.3", "margin": "0.05,0.02"},
    "op": {"fillcolor": "white", "color": "#999999", "shape": "box", "fontsize": "9", "height": "0.25",
           "width": "0.3", "margin": "0.04,0.02", "fontcolor": "#444444"},
}

GRAPH_ATTR = {"fontname": FONT, "nodesep": "0.35", "ranksep": "0.45", "bgcolor": "white"}
NODE_ATTR = {"fontname": FONT, "fontsize": "13", "style": "filled", "penwidth": "1.2"}
EDGE_ATTR = {"fontname": FONT, "fontsize": "10", "arrowsize": "0.7", "color": "#444444"}
DELAY_EDGE = {"style": "dashed", "color": "#b04a3c", "fontcolor": "#b04a3c"}
READ_EDGE = {"color": "#c8c8c8", "arrowsize": "0.5", "penwidth": "0.8"}
INIT_EDGE = {"style": "dotted", "color": "#777777", "fontcolor": "#777777"}


def is_adjoint(name: str) -> bool:
    """Adjoint signals of gradient models are named ``d_<value>``."""
    return name.startswith("d_")


def node_attrs(kind: str, label: str, tooltip: str = "", sub: str = "") -> dict:
    """Graphviz attributes of a node of ``kind`` with ``label`` and an optional small second line ``sub``
    (short labels get circles)."""
    short = len(label) <= 3 and len(sub) <= 5
    attrs = {"label": label, "shape": "circle" if short else "ellipse"}
    if sub:
        attrs["label"] = f'<{html.escape(label)}<BR/><FONT POINT-SIZE="9">{html.escape(sub)}</FONT>>'
    if kind in ("op",):
        attrs.pop("shape")
    attrs.update(KINDS[kind])
    if kind == "param":
        attrs["style"] = "filled"
    if tooltip:
        attrs["tooltip"] = tooltip
    if attrs.get("shape") == "circle":
        attrs["width"] = "0.5"
    return attrs


def describe(node) -> str:
    """A tooltip: the IR node's name, shape, axes and the user's line."""
    axes = ", ".join(a.name for a in node.axes)
    along = f" along ({axes})" if axes else ""
    return f"{node.label()}: {node.op} {tuple(node.shape)}{along} at {node.where}"


def value_kind(graph, node, name: str) -> str:
    """Which look a named value of ``graph`` gets."""
    if node is graph.loss:
        return "loss"
    if any(node is g for g in graph.grads.values()):
        return "grad"
    if is_adjoint(name):
        return "adjoint"
    if name in graph.inputs:
        return "input"
    if name in graph.params:
        return "param"
    if name in graph.outputs and name not in graph.signals:
        return "output"
    return "signal"


OP_SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "÷", "neg": "−x", "matmul": "@", "concat": "concat",
              "asum": "Σ", "amean": "mean", "batch_mean": "mean_b", "to_batch": "to_batch",
              "transpose": "ᵀ", "outer_sum": "Σ outer", "batch_spread": "copy over batch", "edge_sum": "Σ edge"}


def op_label(node) -> str:
    """A small label for an unnamed op node: a symbol, the reduced axis, or a constant's value."""
    if node.op == "const":
        return f"{node.attr('value'):g}" if isinstance(node.attr("value"), (int, float)) else "const"
    label = OP_SYMBOLS.get(node.op, node.op)
    axis = node.attr("axis")
    if axis is not None and hasattr(axis, "name"):
        label = f"{label} {axis.name}"
    return label


LEAVES = ("input", "param", "lengths", "const", "ref")


def defining_op(node) -> str:
    """The op a named value is computed by (a second label line in detailed drawings), '' for leaves."""
    return "" if node.op in LEAVES else op_label(node)
