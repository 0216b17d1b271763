"""Merging a sum of matrix products into one product on stacked operands.

The adjoint of an LSTM's ``h[t-1]`` is ``W_i^T g_i + W_f^T g_f + W_g^T g_g + W_o^T g_o``; as one product

.. math::  \\sum_k A_k g_k = [A_1\\ A_2\\ \\dots] \\begin{bmatrix} g_1 \\\\ g_2 \\\\ \\vdots \\end{bmatrix}

it is one GEMM per step on the stacked adjoints (the same ``concat`` that :mod:`merge_outer` stacks for the
weight gradients, so the CPU renderer writes the adjoints straight into it). A sum is an ``add`` tree whose
inner nodes are read only by the tree; its leaves ``A_k @ g_k`` must be in one stage, with axis-free matrices of
the same row count. The CPU merges per-step sums only of matrices with at most
:data:`~rnnc.passes.merge_matmul.SCAN_MAX_ROWS` columns: one core, float32, four ``gk.dot`` calls and their sum
against one call on the stacked adjoints (``python benchmarks/step_products.py``, two runs) took 3.28 / 2.83
against 2.37 / 2.36 us per step at 8 rows and H = 64, but 1255 / 1249 against 1674 / 1657 us at 64 rows and
H = 512. In an LSTM's split reverse scan at T50 B128 (H = 512, 64 rows per thread), apart instead of merged:
1380-1690 against 2170-2320 us per step (three alternating pairs).
"""
from __future__ import annotations

from rnnc.ir.graph import Graph, rebuild
from rnnc.ops import make
from rnnc.passes.common import remap, uses
from rnnc.passes.merge_matmul import SCAN_MAX_ROWS, _candidate
from rnnc.schedule.schedule import build_schedule


def _leaves(root, inner, stage) -> list:
    """Leaves of the add tree under ``root`` (iterative; ``inner(n, stage)`` says whether to open ``n``)."""
    out, stack = [], [root]
    while stack:
        n = stack.pop()
        if n is root or inner(n, stage):
            stack.extend(reversed(n.inputs))
        else:
            out.append(n)
    return out


def merge_sums(graph: Graph, scan_max_cols: int | None = None) -> Graph:
    """Rewrite ``sum_k A_k @ g_k`` as one product of stacked operands (see the module docstring); inside a scan
    only sums of matrices with at most ``scan_max_cols`` columns, if given."""
    stages = build_schedule(graph)
    stage_of = {n: k for k, s in enumerate(stages) for n in s.nodes}
    count = uses(graph)

    def inner(n, stage) -> bool:
        return n.op == "add" and count[n] == 1 and stage_of.get(n) == stage

    def mergeable(leaf, root) -> bool:
        if not _candidate(leaf) or stage_of.get(leaf) != stage_of.get(root) or leaf.shape != root.shape:
            return False
        k = stage_of.get(leaf)
        return k is None or stages[k].kind == "map" or scan_max_cols is None or leaf.inputs[0].shape[1] <= scan_max_cols

    # outermost trees first (consumers before inputs): a tree that merges, or that holds fewer than two
    # products at all, settles every add inside it, so a chain of n adds is walked once, not n times
    roots, settled = {}, set()
    for n in reversed(graph.nodes):
        if n.op != "add" or n in settled:
            continue
        stage = stage_of.get(n)
        leaves = _leaves(n, inner, stage)
        prods = [leaf for leaf in leaves if mergeable(leaf, n)]
        merges = len(prods) > 1 and len({p.inputs[1] for p in prods}) == len(prods)
        if merges:
            roots[n] = (leaves, prods)
        if merges or sum(_candidate(leaf) and stage_of.get(leaf) == stage for leaf in leaves) < 2:
            settled |= _inner_nodes(n, leaves)
    if not roots:
        return graph

    def fn(node, inputs, mapping):
        if node not in roots:
            return None
        leaves, prods = roots[node]
        mats = make("concat", [mapping[p.inputs[0]] for p in prods], where=node.where)
        stacked = make("concat", [mapping[p.inputs[1]] for p in prods], where=node.where)
        total = make("matmul", [mats, stacked], where=node.where)
        for leaf in leaves:
            if leaf not in prods:
                total = make("add", [total, mapping[leaf]], where=node.where)
        return total

    return remap(graph, rebuild(graph.roots(), fn))


def _inner_nodes(root, leaves) -> set:
    """The add nodes strictly inside ``root``'s tree (between it and its leaves)."""
    leaf_set, out, stack = set(leaves), set(), list(root.inputs)
    while stack:
        n = stack.pop()
        if n in leaf_set or n in out:
            continue
        out.add(n)
        stack.extend(n.inputs)
    return out


def merge_sums_cpu(graph: Graph) -> Graph:
    """:func:`merge_sums` on the CPU: per-step sums only of matrices with at most
    :data:`~rnnc.passes.merge_matmul.SCAN_MAX_ROWS` columns (see the module docstring)."""
    return merge_sums(graph, scan_max_cols=SCAN_MAX_ROWS)
