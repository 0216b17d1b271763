"""Checkpointed interpretation of gradient models (``rc.grad(m, checkpoint=k)``).

Without checkpointing, every value a reverse (adjoint) scan reads is kept for all T steps. With it:

* forward-only map values that only a reverse scan reads (derivative factors such as ``1 - h*h``) move into
  that reverse scan and are computed per step;
* a forward scan keeps, for every value that only reverse scans read, nothing but its recurrent state at every
  k-th step (the "checkpoints"); when the reverse scan reaches a segment of k steps, the forward scan re-runs
  that segment from its checkpoint, with the very same ops, so gradients are bit-for-bit those of a plain run.

Saved memory for those values is O(T/k + k) steps instead of O(T). Values other forward stages read (e.g. the
``h`` an output map uses) are kept whole, as are inputs and outputs.
"""
from __future__ import annotations

import numpy as np

from rnnc.interpret.evaluate import initial_fill
from rnnc.interpret.rolled import Interpreter
from rnnc.schedule.deps import dependency_graph
from rnnc.schedule.schedule import Schedule, Stage


class CheckpointInterpreter(Interpreter):
    """An :class:`Interpreter` that re-computes forward scan segments during reverse scans."""

    def __init__(self, graph, every: int):
        super().__init__(graph)
        self.every = every
        self.dg = dependency_graph(graph)
        forward = self._forward_only(graph)
        self.schedule = self._move_feeders(self.schedule, forward)
        self.lazy = self._lazy_nodes(forward)

    # ------------------------------------------------------------------ planning
    def _forward_only(self, graph) -> set:
        """Nodes that do not depend on any adjoint value (forward values and factors built from them)."""
        import networkx as nx

        fwd_signals = set(graph.meta["forward"].signals)
        backward = set()
        for name in graph.signals:
            if name not in fwd_signals:
                backward |= nx.descendants(self.dg, graph.values[name]) | {graph.values[name]}
        return set(graph.nodes) - backward
    def _stage_of(self, sched):
        return {n: k for k, s in enumerate(sched) for n in s.nodes}

    def _move_feeders(self, sched, forward) -> Schedule:
        """Move forward-only map nodes read only by one reverse scan into that scan (iterate to a fixpoint)."""
        stages = [list(s.nodes) for s in sched]
        changed = True
        while changed:
            changed = False
            where = {n: k for k, s in enumerate(stages) for n in s}
            for k, stage in enumerate(sched):
                if stage.kind != "map":
                    continue
                for n in list(stages[k]):
                    dst = self._single_reverse_consumer(n, sched, where, forward)
                    if dst is not None:
                        stages[k].remove(n)
                        stages[dst].insert(0, n)
                        changed = True
        out = [Stage(s.kind, tuple(_topo_within(stages[k], self.dg)), s.axis, s.direction)
               for k, s in enumerate(sched) if stages[k]]
        return Schedule(out, self.graph)

    def _single_reverse_consumer(self, n, sched, where, forward):
        if n not in forward or n.op in ("ref", "const", "param", "input", "lengths") or n in self._roots():
            return None
        targets = set()
        for _, c, d in self.dg.out_edges(n, data=True):
            if d["shift"] or d["all"]:
                return None
            targets.add(where.get(c))
        if len(targets) != 1:
            return None
        (dst,) = targets
        stage = sched[dst]
        if stage.kind != "scan" or stage.direction > 0 or stage.axis not in n.axes:
            return None
        return dst

    def _roots(self):
        g = self.graph
        return set(g.outputs.values()) | set(g.grads.values()) | ({g.loss} if g.loss is not None else set())

    def _lazy_nodes(self, forward) -> dict:
        """Nodes of forward scans that only their own scan and reverse scans read -> their stage."""
        where = self._stage_of(self.schedule)
        lazy = {}
        for k, stage in enumerate(self.schedule):
            if stage.kind != "scan" or stage.direction < 0 or not set(stage.nodes) <= forward:
                continue
            for n in stage.nodes:
                if n in self._roots():
                    continue
                readers = {where.get(c) for _, c in self.dg.out_edges(n)}
                if all(r == k or (self.schedule[r].kind == "scan" and self.schedule[r].direction < 0
                                  and self.schedule[r].axis == stage.axis) for r in readers):
                    lazy[n] = k
        return lazy

    # ------------------------------------------------------------------ running
    def run(self, inputs, params, dtype=None, sizes=None, batch=None, check_finite=False):
        self.saved, self.segment = {}, {}
        return super().run(inputs, params, dtype, sizes, batch, check_finite)

    def _scan(self, stage, nodes, env, b):
        k_stage = self.schedule.index(stage) if stage in self.schedule else None
        if not any(self.lazy.get(n) == k_stage for n in nodes):
            return super()._scan(stage, nodes, env, b)
        axis, size = stage.axis, b.sizes[stage.axis]
        members, fills = set(stage.nodes), {}
        steps = {n: [None] * size for n in nodes}
        ckpt = {}
        depth = max([-r.attr("offset") for r in nodes if r.op == "ref" and r.attr("offset")] or [1])
        carried = {self.graph.value_of(r) for r in nodes if r.op == "ref" and r.attr("offset")}
        for k in range(size):
            for node in nodes:
                steps[node][k] = self._scan_node(node, k, axis, size, members, steps, env, b, fills)
            for node in nodes:
                if node in self.lazy and k - depth >= 0:
                    steps[node][k - depth] = None
            if (k + 1) % self.every == 0:
                ckpt[k + 1] = {n: steps[n][max(0, k + 1 - depth):k + 1] for n in carried}
        for node in nodes:
            if node not in self.lazy:
                env[node] = np.stack(steps[node], axis=node.axes.index(axis))
        self.saved[k_stage] = (stage, nodes, ckpt, fills)

    def _step_input(self, i, k, axis, members, steps, env, b):
        if i in self.lazy and i not in members:
            return self._recompute(self.lazy[i], k, env, b)[i][k]
        return super()._step_input(i, k, axis, members, steps, env, b)

    def _recompute(self, k_stage, k, env, b):
        """Re-run the segment of forward scan ``k_stage`` that holds step ``k`` (cached per segment)."""
        start = (k // self.every) * self.every
        cached = self.segment.get(k_stage)
        if cached is not None and cached[0] == start:
            return cached[1]
        stage, nodes, ckpt, fills = self.saved[k_stage]
        axis, size = stage.axis, b.sizes[stage.axis]
        members = set(stage.nodes)
        steps = {n: {} for n in nodes}       # step index -> value, this segment and its checkpoint
        for n, vals in ckpt.get(start, {}).items():
            for d, v in enumerate(vals):
                steps[n][start - len(vals) + d] = v
        for j in range(start, min(start + self.every, size)):
            for node in nodes:
                steps[node][j] = self._scan_node(node, j, axis, size, members, steps, env, b, fills)
        self.segment[k_stage] = (start, steps)
        return steps


def _topo_within(nodes, dg):
    import networkx as nx

    sub = dg.subgraph(nodes)
    same = nx.DiGraph()
    same.add_nodes_from(nodes)
    same.add_edges_from((u, v) for u, v, d in sub.edges(data=True) if not d["shift"])
    order = {n: k for k, n in enumerate(nodes)}
    return list(nx.lexicographical_topological_sort(same, key=lambda n: order[n]))


__all__ = ["CheckpointInterpreter", "initial_fill"]
