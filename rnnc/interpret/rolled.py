"""The reference interpreter: the definition of what a model means.

For each stage in schedule order::

    map:   for every node, value[node] = op(inputs) over all indices at once
    scan:  for k in range(size) (reversed for a reverse scan):
               for every node of the stage: value[node][k] = op(inputs at k)
               where a reference s[t-d] reads value[s][k-d], or s's initial value when k-d is out of range
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnc.interpret.bind import Binding, bind
from rnnc.interpret.evaluate import evaluate, initial_fill, shift
from rnnc.ir.graph import Graph, topo_order
from rnnc.schedule.deps import LEAVES
from rnnc.schedule.schedule import Schedule, build_schedule


@dataclass
class Result:
    """What a run gives: ``outputs`` by name, the scalar ``loss`` (None without targets), ``grads`` by name
    (gradient models), and ``values``: every signal's array by name."""

    outputs: dict
    loss: float | None
    grads: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)


def _readers(graph: Graph) -> dict:
    """Node -> the nodes that read it (as an input, or through a reference)."""
    out: dict = {}
    for n in graph.nodes:
        for i in n.inputs:
            out.setdefault(i, set()).add(n)
        if n.op == "ref":
            out.setdefault(graph.value_of(n), set()).add(n)
    return out


def _loss_only_inputs(graph: Graph) -> set:
    def read(n):  # a reference needs the value it reads (e.g. a sequence input)
        v = graph.values.get(n.attr("value")) if n.op == "ref" else None
        return (v,) if v is not None else ()

    keep = set(topo_order(list(graph.outputs.values()) + [graph.values[s] for s in graph.signals]
                          + list(graph.inits.values()), extra=read))
    return {n.name for n in graph.nodes if n.op in ("input", "lengths") and n not in keep}


class Interpreter:
    """Runs a graph's schedule in numpy, stage by stage."""

    def __init__(self, graph: Graph, sched: Schedule | None = None):
        self.graph = graph
        self.schedule = sched or build_schedule(graph)
        self.readers = _readers(graph)

    def run(self, inputs, params, dtype=None, sizes=None, batch=None, check_finite=False) -> Result:
        g = self.graph
        optional = _loss_only_inputs(g)
        b = bind(g, inputs, params, dtype, sizes, batch, optional=optional, check_finite=check_finite)
        skip = self._unreachable(b)
        env = dict(b.arrays)
        for node in g.nodes:
            if node.op == "const":
                env[node] = np.asarray(node.attr("value"), dtype=b.dtype)
            elif node.op == "param" and node not in env:
                env[node] = b.arrays[node]
        for stage in self.schedule:
            nodes = [n for n in stage.nodes if n not in skip]
            if stage.kind == "map":
                for node in nodes:
                    env[node] = self._map_node(node, env, b)
            else:
                self._scan(stage, nodes, env, b)
        return self._result(env, skip)

    def _unreachable(self, b: Binding) -> set:
        missing = [n for n in self.graph.nodes if n.op in ("input", "lengths") and n not in b.arrays]
        if not missing:
            return set()
        dead, missing = set(missing), set(missing)
        for n in self.graph.nodes:
            if any(i in dead for i in n.inputs) or (n.op == "ref" and self.graph.values.get(n.attr("value")) in dead):
                dead.add(n)
        return dead

    def _result(self, env, skip) -> Result:
        g = self.graph
        loss = None
        if g.loss is not None and g.loss not in skip:
            loss = float(np.asarray(env[g.loss]))
        grads = {k: env[v] for k, v in g.grads.items() if v not in skip}
        values = {s: env[g.values[s]] for s in g.signals if g.values[s] in env}
        return Result({k: env[v] for k, v in g.outputs.items()}, loss, grads, values)

    # ------------------------------------------------------------------ maps
    def _map_node(self, node, env, b: Binding):
        if node.op in LEAVES:
            return env[node]
        if node.op == "ref":
            return self._ref_full(node, env, b)
        arrays = [env[i] for i in node.inputs]
        return evaluate(node, arrays, [i.axes for i in node.inputs], node.axes, b.sizes, b.batch, b.dtype)

    def _ref_full(self, node, env, b: Binding):
        value = self.graph.value_of(node)
        arr = env[value]
        offset = node.attr("offset")
        if not offset:
            return arr
        axis = node.attr("axis")
        pos = value.axes.index(axis)
        init = env[node.inputs[0]] if node.inputs else None
        rest = tuple(a for a in value.axes if a != axis)
        fill = initial_fill(node, init, value, rest, b.sizes, b.batch, arr.dtype)
        return shift(arr, pos, offset, fill)

    # ------------------------------------------------------------------ scans
    def _scan(self, stage, nodes, env, b: Binding):
        axis, size = stage.axis, b.sizes[stage.axis]
        members = set(stage.nodes)
        steps = {n: [None] * size for n in nodes}
        fills = {}
        keep = self._kept(nodes, members)
        depth = max([abs(r.attr("offset")) for r in nodes if r.op == "ref"] or [0])
        order = range(size) if stage.direction > 0 else range(size - 1, -1, -1)
        for k in order:
            for node in nodes:
                steps[node][k] = self._scan_node(node, k, axis, size, members, steps, env, b, fills)
            old = k - stage.direction * depth
            if 0 <= old < size:
                for node in nodes:
                    if node not in keep:
                        steps[node][old] = None
        for node in nodes:
            if node in keep:
                env[node] = np.stack(steps[node], axis=node.axes.index(axis))

    def _kept(self, nodes, members) -> set:
        """Scan nodes whose whole array is needed after the stage (the rest is dropped step by step)."""
        g = self.graph
        shown = g.meta["forward"].signals if "forward" in g.meta else g.signals
        roots = set(g.outputs.values()) | set(g.grads.values()) | set(g.inits.values()) | {g.loss}
        roots |= {g.values[s] for s in shown}
        return {n for n in nodes if n in roots or any(r not in members for r in self.readers.get(n, ()))}

    def _step_input(self, i, k, axis, members, steps, env, b):
        """Input ``i`` of a scan node at step ``k``."""
        if i in members:
            return steps[i][k]
        if axis in i.axes:
            return np.take(env[i], k, axis=i.axes.index(axis))
        return env[i]

    def _scan_node(self, node, k, axis, size, members, steps, env, b, fills):
        if node.op == "ref":
            value = self.graph.value_of(node)
            j = k + node.attr("offset")
            if 0 <= j < size:
                return steps[value][j]
            if node not in fills:
                init = env[node.inputs[0]] if node.inputs else None
                rest = tuple(a for a in value.axes if a != axis)
                fills[node] = initial_fill(node, init, value, rest, b.sizes, b.batch, b.dtype)
            return fills[node]
        arrays, in_axes = [], []
        for i in node.inputs:
            arrays.append(self._step_input(i, k, axis, members, steps, env, b))
            in_axes.append(tuple(a for a in i.axes if a != axis))
        out_axes = tuple(a for a in node.axes if a != axis)
        return evaluate(node, arrays, in_axes, out_axes, b.sizes, b.batch, b.dtype, {axis: k})
