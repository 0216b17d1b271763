"""Recomputation: a cheap elementwise value a scan computes and a later stage reads back is computed again
there, from what that stage can read anyway, instead of being stored for every step.

A value ``y = f(x)`` of a scan, read by a later stage, is stored for every step of the axis. When ``x`` is
stored anyway (a named value, a leaf) and every later reader is an elementwise program, splicing ``f`` into
each reader's program (as :mod:`rnnc.passes.fuse` does within a stage) leaves ``y`` read inside its own scan
only: a one-step buffer. An LSTM's ``tanh(c[t])``, computed by the forward scan for ``h[t] = o * tanh(c[t])``
and read by the reverse scan for :math:`\\bar o = \\bar h \\tanh c` and :math:`\\bar c \\mathrel{+}= \\bar h\\, o
(1 - \\tanh^2 c)`, is recomputed there from ``c[t]`` (one ``(T, B, H)`` array less). The recomputed value has
the same bits (the same code on the same input). Runs after fusion, on fused programs.
"""
from __future__ import annotations

from rnnc.ir.graph import Graph, rebuild
from rnnc.ir.node import Node
from rnnc.passes.common import remap
from rnnc.passes.fuse import FUSABLE, MAX_FUSED, program_of, spliced
from rnnc.schedule.schedule import build_schedule

#: the longest program recomputed in another stage (an LSTM's ``tanh(c)`` is one instruction)
MAX_RECOMPUTED = 4


def _elementwise(node: Node) -> bool:
    return (node.op in FUSABLE or node.op == "fused") and node.dtype == "float"


def candidates(graph: Graph) -> set:
    """Nodes of a scan to recompute in the later stages that read them (see the module docstring)."""
    stages = build_schedule(graph)
    stage_of = {n: k for k, s in enumerate(stages) for n in s.nodes}
    stored = set(graph.values.values()) | {n for n in graph.nodes if n.op in ("param", "input", "const")
                                           or (n.op == "ref" and not n.attr("offset"))}     # c[t]: c's buffer
    roots = set(graph.roots())
    users: dict = {}
    for n in graph.nodes:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    out = set()
    for n in graph.nodes:
        k = stage_of.get(n)
        if k is None or stages[k].kind != "scan" or n in roots or not _elementwise(n) \
                or len(program_of(n)) > MAX_RECOMPUTED or not all(i in stored for i in n.inputs):
            continue
        later = [u for u in users.get(n, []) if stage_of.get(u) != k]
        if later and all(_elementwise(u) and stage_of.get(u, -1) > k and u.axes == n.axes
                         and u.batched == n.batched for u in later):
            out.add(n)
    return out


def remat(graph: Graph) -> Graph:
    """Recompute the :func:`candidates` in the programs of their readers in later stages."""
    chosen = candidates(graph)
    if not chosen:
        return graph
    stages = build_schedule(graph)
    stage_of = {n: k for k, s in enumerate(stages) for n in s.nodes}

    def fn(node, inputs, mapping):
        splice = [old in chosen and stage_of.get(old) != stage_of.get(node) for old in node.inputs]
        if not any(splice):
            return None
        own = program_of(node)
        if len(own) + sum(len(program_of(new)) for new, s in zip(inputs, splice) if s) > MAX_FUSED:
            return None
        return spliced(node, inputs, own, splice)

    return remap(graph, rebuild(graph.roots(), fn))
