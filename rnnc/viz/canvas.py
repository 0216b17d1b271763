"""A graphviz canvas shared by the drawings: short node ids, node kinds, edge kinds."""
from __future__ import annotations

import graphviz

from rnnc.ir.node import Node
from rnnc.viz import style
from rnnc.viz.contract import REDUCTIONS


def delay_of(ref: Node) -> str | None:
    """``"t-1"`` for a reference ``h[t-1]``; None for a same-index read."""
    offset = ref.attr("offset")
    return f"{ref.attr('axis').name}{offset:+d}" if offset else None


def reduction_label(node: Node) -> str | None:
    """``"sum t"`` for a sum over axis ``t`` and the like; None for other ops."""
    what = REDUCTIONS.get(node.op)
    return f"{what} {node.attr('axis').name}" if what and node.attr("axis") is not None else None


class Canvas:
    """A graphviz Digraph under construction with short node ids and a node count."""

    def __init__(self, name: str, rankdir: str, title: str | None, loose_delays: bool = True):
        self.dot = graphviz.Digraph(name, graph_attr={**style.GRAPH_ATTR, "rankdir": rankdir},
                                    node_attr=style.NODE_ATTR, edge_attr=style.EDGE_ATTR)
        if title:
            self.dot.attr(label=title, labelloc="t", fontsize="14")
        self.ids: dict = {}
        self.loose_delays = loose_delays   # delayed edges do not rank their head above their tail

    def node_id(self, key) -> str:
        if key not in self.ids:
            self.ids[key] = f"n{len(self.ids)}"
        return self.ids[key]

    def node(self, key, kind: str, label: str, tooltip: str = "", into=None, sub: str = "", **extra) -> None:
        (into or self.dot).node(self.node_id(key), **{**style.node_attrs(kind, label, tooltip, sub), **extra})

    def edge(self, src, dst, label: str = "", delay: bool = False, init: bool = False, into=None,
             read: bool = False, **extra) -> None:
        """An edge; ``delay``: through a delayed reference (dashed), ``init``: into an initial value
        (dotted), ``read``: a gradient reading a forward value (light)."""
        attrs = {"label": f" {label} "} if label else {}
        if read:
            attrs.update(style.READ_EDGE)
        elif delay:
            attrs.update(style.DELAY_EDGE, **({"constraint": "false"} if self.loose_delays else {}))
        elif init:
            attrs.update(style.INIT_EDGE)
        (into or self.dot).edge(self.node_id(src), self.node_id(dst), **attrs, **extra)
