"""Merging weight gradients that share an operand (the backward twin of :mod:`merge_matmul`).

An LSTM's gradient has, for each gate ``k``, ``dU_k = sum g_k x^T`` and ``dW_k = sum g_k h^T`` over every step
and sample, and ``db_k = sum g_k``. Stacking the gate adjoints ``G = [g_1; g_2; ...]`` (one ``concat``) makes
each family ONE product, split by rows after:

.. math::  \\sum_t G_t x_t^T = [\\textstyle\\sum g_1 x^T;\\ \\sum g_2 x^T;\\ \\dots] \\qquad
           \\sum_t G_t = [\\textstyle\\sum g_1;\\ \\sum g_2;\\ \\dots]

so eight small products and four sums become two large products and one sum. ``take_rows`` (a pass-level op,
like ``fused``) is the row split; the CPU renderer writes the adjoints straight into the stacked buffer.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from rnnc.ir.graph import Graph, rebuild, topo_order
from rnnc.ops import OPS, make
from rnnc.ops.registry import register
from rnnc.passes.common import remap
from rnnc.schedule.schedule import build_schedule


def _rows_shape(inputs, attrs):
    (x,) = inputs
    if len(x.shape) != 2 or not 0 <= attrs["start"] < attrs["stop"] <= x.shape[0]:
        raise ValueError(f"take_rows [{attrs['start']}:{attrs['stop']}] needs a matrix with that many rows, "
                         f"got shape {x.shape}")
    return (attrs["stop"] - attrs["start"], x.shape[1]), x.dtype


if "take_rows" not in OPS:
    register("take_rows", _rows_shape,
             lambda n, x: np.ascontiguousarray(x[..., n.attr("start"):n.attr("stop"), :]), None,
             cuda_reuses_cpu=True)


def _weight_grad(node) -> bool:
    """``outer_sum`` of two vectors on the same loop axes, summed to an axis-free matrix."""
    if node.op != "outer_sum" or node.axes or node.batched:
        return False
    g, x = node.inputs
    return len(g.shape) == 1 and len(x.shape) == 1 and g.axes == x.axes and g.batched == x.batched \
        and g.dtype == "float" and g.op != "const"


def _bias_grad(node) -> bool:
    if node.op != "sum_to" or node.axes or node.batched or len(node.shape) != 1:
        return False
    (g,) = node.inputs
    return g.shape == node.shape


def _groups(graph: Graph):
    """Weight gradients grouped by (their shared right operand, stage); a group needs two adjoints or more."""
    stage_of = {n: k for k, s in enumerate(build_schedule(graph)) for n in s.nodes}
    by_key = defaultdict(list)
    for n in graph.nodes:
        if _weight_grad(n):
            by_key[(n.inputs[1], stage_of.get(n))].append(n)
    groups = [tuple(v) for v in by_key.values() if len({n.inputs[0] for n in v}) > 1]
    # the rewrite reads adjoints as they are: none may depend on a node it replaces
    rewritten = {n for g in groups for n in g} | {n for n in graph.nodes if _bias_grad(n)}
    return [g for g in groups if not rewritten & set(topo_order([n.inputs[0] for n in g]))]


def merge_outer(graph: Graph) -> Graph:
    """Stack gate adjoints so weight and bias gradients are one product / sum each (module docstring)."""
    groups = _groups(graph)
    if not groups:
        return graph
    stacks: dict = {}         # tuple of adjoints -> (concat node, {adjoint: start})
    member: dict = {}         # outer_sum node -> its group's adjoint tuple
    existing = {frozenset(n.inputs): n for n in graph.nodes
                if n.op == "concat" and len(set(n.inputs)) == len(n.inputs)}
    for group in groups:
        adjoints = tuple(dict.fromkeys(n.inputs[0] for n in group))
        same = existing.get(frozenset(adjoints))
        if same is not None:          # already stacked (merge_sums): share that concat and its order
            adjoints = same.inputs
            stacks[adjoints] = (same, _starts(adjoints))
        member.update({n: adjoints for n in group})
        stacks.setdefault(adjoints, None)
    in_stack = {g: adjoints for adjoints in stacks for g in adjoints}
    built: dict = {}

    def stacked(adjoints, mapping):
        if stacks[adjoints] is None:
            parts = [mapping.get(g, g) for g in adjoints]
            stacks[adjoints] = (make("concat", parts, where=adjoints[0].where), _starts(adjoints))
        cat, starts = stacks[adjoints]
        return mapping.get(cat, cat), starts

    def fn(node, inputs, mapping):
        if node in member:
            adjoints = member[node]
            cat, starts = stacked(adjoints, mapping)
            key = ("outer", adjoints, node.inputs[1])
            if key not in built:
                built[key] = make("outer_sum", [cat, inputs[1]], where=node.where, axes=(), batched=False)
            s = starts[node.inputs[0]]
            return make("take_rows", [built[key]], where=node.where, start=s, stop=s + node.shape[0])
        if _bias_grad(node) and node.inputs[0] in in_stack:
            adjoints = in_stack[node.inputs[0]]
            cat, starts = stacked(adjoints, mapping)
            key = ("sum", adjoints)
            if key not in built:
                built[key] = make("sum_to", [cat], where=node.where, axes=(), batched=False,
                                  shape=cat.shape)
            s = starts[node.inputs[0]]
            return make("slice", [built[key]], where=node.where, start=s, stop=s + node.shape[0])
        return None

    return remap(graph, rebuild(graph.roots(), fn))


def _starts(adjoints) -> dict:
    """Where each adjoint starts in the stacked vector."""
    out, at = {}, 0
    for g in adjoints:
        out[g] = at
        at += g.shape[0]
    return out
