"""The dependency graph of a model and its strongly connected components.

Edges run from a value to each value computed from it. An edge is *same-index* (``h[t]`` feeds ``o[t]``),
*shifted* (a reference ``h[t-1]``: axis and offset) or *all* (a reduction such as ``h.last(t)`` needs every
index). A cycle is legal only if it contains a shifted edge; all cycle-closing shifts of one component must
run along one axis in one direction, and that component becomes a scan.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from rnnc.errors import CycleError, GraphError
from rnnc.ir.graph import Graph
from rnnc.ir.node import Axis
from rnnc.ops.registry import LEAVES  # noqa: F401  (input, param, const, lengths: the op table's leaves)


@dataclass(frozen=True)
class Component:
    """A strongly connected component: ``axis``/``direction`` are set for a recurrence (a scan)."""

    nodes: tuple
    axis: Axis | None = None
    direction: int = 0   # +1: forward (reads t-k), -1: reverse (reads t+k)

    @property
    def is_scan(self) -> bool:
        return self.axis is not None


def dependency_graph(graph: Graph) -> nx.DiGraph:
    g = nx.DiGraph()
    for n in graph.nodes:
        g.add_node(n)
        for i in n.inputs:
            g.add_edge(i, n, shift=None, all=tuple(a for a in i.axes if a not in n.axes))
        if n.op == "ref":
            src = graph.values.get(n.attr("value"))
            if src is None:
                raise GraphError(f"{n.attr('value')!r} is read at {n.where} but never defined")
            shift = (n.attr("axis"), n.attr("offset")) if n.attr("offset") else None
            g.add_edge(src, n, shift=shift, all=())
    return g


def _describe(nodes, named) -> str:
    return "\n".join(f"  {named.get(n, n.label())} ({n.op}) at {n.where}" for n in nodes)


def _headline(nodes, named):
    """The node a one-line report quotes: the first signal definition among ``nodes`` (else the first node)."""
    return next((n for n in nodes if n in named and n.op != "ref"), nodes[0])


def _names(nodes, named) -> str:
    """The signals on a cycle, once each in order: ``h -> g``."""
    seen = list(dict.fromkeys(named[n] for n in nodes if n in named and n.op != "ref"))
    return " -> ".join(seen) if seen else nodes[0].label()


def _check_component(dg: nx.DiGraph, nodes: set, named: dict) -> Component:
    sub = dg.subgraph(nodes)
    shifts = {(d["shift"][0], d["shift"][1] > 0) for _, _, d in sub.edges(data=True) if d["shift"]}
    same = nx.DiGraph((u, v) for u, v, d in sub.edges(data=True) if not d["shift"])
    try:
        cycle = nx.find_cycle(same)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        loop = [u for u, _ in cycle]
        head = _headline(loop, named)
        axis = head.axes[0].name if head.axes else "t"
        name = named.get(head, "h")
        raise CycleError(f"{head.where}: algebraic loop through {_names(loop, named)} with no delayed reference "
                         f"(read a signal on it at a shift such as {name}[{axis}-1], not {name}[{axis}]); the cycle:\n"
                         + _describe(loop, named))
    if len(shifts) > 1:
        members = sorted(nodes, key=lambda n: n.id)
        head = _headline(members, named)
        raise GraphError(f"{head.where}: the recurrence through {_names(members, named)} runs along several axes "
                         "or in both directions ("
                         + ", ".join(f"{a.name}{'+' if pos else '-'}" for a, pos in sorted(
                             shifts, key=lambda s: (s[0].order, s[1]))) + "); split it into separate signals:\n"
                         + _describe(members, named))
    (axis, positive), = shifts
    for _, v, d in sub.edges(data=True):
        if axis in d["all"]:
            raise GraphError(f"{named.get(v, v.label())} at {v.where} reduces over {axis.name} inside the "
                             f"recurrence along {axis.name}, which needs every step before it can start")
    order = [n for n in nx.topological_sort(same.subgraph(nodes)) if n in nodes] if same else []
    rest = [n for n in sorted(nodes, key=lambda n: n.id) if n not in set(order)]
    return Component(tuple(order + rest), axis, -1 if positive else +1)


def components(graph: Graph) -> tuple[nx.DiGraph, list[Component]]:
    """Validate the recurrences and return the dependency graph and its components (unordered)."""
    dg = dependency_graph(graph)
    named = graph.named()
    comps = []
    for scc in nx.strongly_connected_components(dg):
        if len(scc) == 1:
            (n,) = scc
            if dg.has_edge(n, n):
                raise CycleError(f"{n.where}: algebraic loop: {named.get(n, n.label())} reads itself at the same "
                                 "index")
            comps.append(Component((n,)))
        else:
            comps.append(_check_component(dg, set(scc), named))
    return dg, comps


def scan_of_signals(graph: Graph) -> dict:
    """Map each signal computed by a scan to its (axis, direction)."""
    _, comps = components(graph)
    out = {}
    defs = {graph.values[s]: s for s in graph.signals}
    for c in comps:
        if c.is_scan:
            for n in c.nodes:
                if n in defs:
                    out[defs[n]] = (c.axis, c.direction)
    return out
