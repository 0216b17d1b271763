"""Ordering a model into stages: **maps** (no recurrence; every index at once) and **scans** (a recurrence
along one axis in one direction; the other axes run in parallel).

Strongly connected components of the dependency graph that contain a cycle become scans; everything else is
hoisted into maps. Stages follow a topological order of the components that runs every ready map before the
next scan, so adjacent maps merge.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from rnnc.ir.graph import Graph
from rnnc.ir.node import Axis
from rnnc.schedule.deps import LEAVES, components
from rnnc.schedule.show import expression


@dataclass(frozen=True)
class Stage:
    """One stage: ``kind`` is ``"map"`` or ``"scan"``; a scan has an ``axis`` and a ``direction``
    (+1 forward for ``t-k`` reads, -1 reverse for ``t+k`` reads). ``nodes`` are in evaluation order."""

    kind: str
    nodes: tuple
    axis: Axis | None = None
    direction: int = 0

    def describe(self, named: dict, used_outside: set) -> list[str]:
        """A header line and one ``name = expression`` line per result of the stage."""
        if self.kind == "scan":
            arrow = "forward" if self.direction > 0 else "reverse"
            parallel = sorted({a.name for n in self.nodes for a in n.axes} - {self.axis.name})
            par = f", parallel over {', '.join(parallel)}" if parallel else ""
            head = f"scan {self.axis.name} {arrow}{par}"
        else:
            axes = sorted({a.name for n in self.nodes for a in n.axes})
            head = "map" + (f" over {', '.join(axes)}" if axes else " (axis-free)")
        results = [n for n in self.nodes if (n in named or n in used_outside) and n.op not in ("ref", "const")]
        names = dict(named)
        names.update({n: f"%{n.id}" for n in results if n not in named})
        inline = set(self.nodes) - set(results)
        lines = [head]
        for n in results:
            lines.append(f"{names[n]} = {expression(n, names, inline)}")
        return lines


class Schedule(tuple):
    """The ordered stages of a model; ``str()`` shows them one per line."""

    graph: Graph

    def __new__(cls, stages, graph):
        obj = super().__new__(cls, stages)
        obj.graph = graph
        return obj

    def __str__(self) -> str:
        named = _display_names(self.graph)
        stage_of = {n: k for k, s in enumerate(self) for n in s.nodes}
        outside = {i for k, s in enumerate(self) for n in s.nodes for i in n.inputs
                   if stage_of.get(i, k) != k}
        outside |= {self.graph.value_of(n) for n in self.graph.refs()
                    if stage_of.get(self.graph.value_of(n)) != stage_of.get(n)}
        lines = [f"schedule of {self.graph.name!r}: {len(self)} stage{'s' * (len(self) != 1)}"]
        for k, stage in enumerate(self, 1):
            head, *body = stage.describe(named, outside)
            lines.append(f"  {k}. {head}")
            lines += [f"       {b}" for b in body]
        return "\n".join(lines)

    __repr__ = __str__


def _display_names(graph: Graph) -> dict:
    named = graph.named()
    return {n: name for n, name in named.items() if n.op not in LEAVES}


def build_schedule(graph: Graph) -> Schedule:
    """Validate ``graph`` and order it into stages."""
    dg, comps = components(graph)
    comp_of = {n: k for k, c in enumerate(comps) for n in c.nodes}
    cond = nx.DiGraph()
    cond.add_nodes_from(range(len(comps)))
    cond.add_edges_from((comp_of[u], comp_of[v]) for u, v in dg.edges if comp_of[u] != comp_of[v])
    indeg = {k: cond.in_degree(k) for k in cond}
    ready = [k for k, d in indeg.items() if d == 0]
    stages: list[Stage] = []
    pending_map: list = []
    topo_rank = {n: k for k, n in enumerate(graph.nodes)}
    while ready:
        maps = [k for k in ready if not comps[k].is_scan]
        pick = maps if maps else [min(ready, key=lambda k: min(topo_rank.get(n, 0) for n in comps[k].nodes))]
        for k in pick:
            ready.remove(k)
            comp = comps[k]
            if comp.is_scan:
                # flush pending maps only when this scan reads them: independent scans stay adjacent
                pending = set(pending_map)
                if any(u in pending for n in comp.nodes for u in dg.predecessors(n)):
                    stages.append(Stage("map", tuple(pending_map)))
                    pending_map = []
                stages.append(Stage("scan", comp.nodes, comp.axis, comp.direction))
            else:
                pending_map.extend(n for n in comp.nodes if n.op not in LEAVES)
            for succ in cond.successors(k):
                indeg[succ] -= 1
                if indeg[succ] == 0:
                    ready.append(succ)
    if pending_map:
        stages.append(Stage("map", tuple(pending_map)))
    return Schedule(stages, graph)


def schedule(model) -> Schedule:
    """``rc.schedule(m)``: the ordered map and scan stages of a model (or graph)."""
    graph = model if isinstance(model, Graph) else model.graph
    return build_schedule(graph)
