"""Merging matrix products that share an operand.

Products ``A_k @ x`` in one stage with the same ``x`` and axis-free matrices ``A_k`` (an LSTM's four gate
products on ``x[t]`` or ``h[t-1]``) become one product on the stacked matrix, split after:

.. math::  [A_1; A_2; \\dots] x = [A_1 x; A_2 x; \\dots]

The stacked matrix is axis-free, so it is built once per call, outside every loop. Inside a scan the products
are per step and small (batch rows). One core, float32, four ``gk.dot`` calls against one merged call
(``python benchmarks/step_products.py``, two runs): (8 x 64) @ (64 x 64) 2.84 / 2.72 against 2.41 / 2.41 us,
(16 x 128) @ (128 x 128) 22.8 / 18.8 against 18.5 / 18.3 us, but (64 x 256) @ (256 x 256) 303 / 311 against
320 / 329 us. So the CPU pipeline (:func:`merge_matmul_cpu`) merges a scan's group only when each matrix has at
most :data:`SCAN_MAX_ROWS` rows; on a GPU one launch instead of four always pays, and the generic pipeline merges
every group.
"""
from __future__ import annotations

from collections import defaultdict

from rnnc.ir.graph import Graph, rebuild, topo_order
from rnnc.ops import make
from rnnc.passes.common import remap
from rnnc.schedule.schedule import build_schedule

SCAN_MAX_ROWS = 128


def _axis_free(node) -> bool:
    return all(not n.axes and not n.batched for n in topo_order([node]))


def _candidate(node) -> bool:
    if node.op != "matmul":
        return False
    a, b = node.inputs
    return len(a.shape) == 2 and len(b.shape) == 1 and b.axes == node.axes and b.batched == node.batched \
        and a.op != "const" and _axis_free(a)


def _groups(graph: Graph, scan_max_rows: int | None) -> dict:
    stages = build_schedule(graph)
    stage_of = {n: k for k, s in enumerate(stages) for n in s.nodes}
    by_key = defaultdict(list)
    for n in graph.nodes:
        k = stage_of.get(n)
        if _candidate(n) and (k is None or stages[k].kind == "map" or scan_max_rows is None
                              or n.shape[0] <= scan_max_rows):
            by_key[(n.inputs[1], k)].append(n)
    member = {}
    for nodes in by_key.values():
        if len(nodes) > 1:
            for n in nodes:
                member[n] = tuple(nodes)
    return member


def merge_matmul(graph: Graph, scan_max_rows: int | None = None) -> Graph:
    """Stack the matrices of products sharing their right operand (see the module docstring); inside a scan
    only matrices of at most ``scan_max_rows`` rows, if given."""
    member = _groups(graph, scan_max_rows)
    if not member:
        return graph
    built: dict = {}

    def fn(node, inputs, mapping):
        group = member.get(node)
        if group is None:
            return None
        if group not in built:
            mats = [mapping.get(n.inputs[0], n.inputs[0]) for n in group]
            stacked = make("transpose", [make("concat", [make("transpose", [a], where=a.where) for a in mats],
                                              where=group[0].where)], where=group[0].where)
            big = make("matmul", [stacked, inputs[1]], where=group[0].where)
            built[group] = {}
            start = 0
            for n in group:
                m = n.shape[0]
                built[group][n] = make("slice", [big], where=n.where, start=start, stop=start + m)
                start += m
        return built[group][node]

    return remap(graph, rebuild(graph.roots(), fn))


def merge_matmul_cpu(graph: Graph) -> Graph:
    """:func:`merge_matmul` with the CPU's bound for per-step products (:data:`SCAN_MAX_ROWS`)."""
    return merge_matmul(graph, SCAN_MAX_ROWS)
