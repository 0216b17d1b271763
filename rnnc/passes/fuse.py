"""Elementwise fusion: a chain of elementwise nodes, each read only by the next, on the same axes and in
the same stage (or an earlier map stage feeding a later one), becomes ONE ``fused`` node holding a small
program (one loop, no temporaries in a backend).

A program is a tuple of instructions ``(op, shape, attrs, args)``; an arg is ``("in", k)`` (the fused
node's k-th input) or ``("t", j)`` (the result of instruction j). The last instruction is the result.
``slice`` and ``expand`` fuse too (they only remap feature indices).

A program holds at most :data:`MAX_FUSED` instructions: a longer chain (2,000 chained adds, 2,000 nested
``tanh``) becomes several fused nodes, each result stored and read by the next. Numba's and LLVM's compile time
grows faster than linearly with the size of one loop body, so bounded bodies keep compile time linear in the
model's size; an LSTM step's programs hold at most 18 instructions, so the bound never splits a cell's body.
"""
from __future__ import annotations

from rnnc.ir.graph import Graph, rebuild
from rnnc.ir.node import Node
from rnnc.ops import OPS
from rnnc.ops.registry import ops_with, register
from rnnc.passes.common import remap, uses
from rnnc.schedule.schedule import build_schedule

#: most instructions in one fused program (and, in the CPU renderer, in one loop nest of sibling programs):
#: 500 chained adds in one loop body took Numba 16.6 s to compile, in eight bodies of 64 about 4 s (measured)
MAX_FUSED = 64

#: ops a fused program can hold: those with a scalar form (``OpDef.scalar_cpu``), a user's among them
FUSABLE = ops_with(fusable=True)


class _View:
    """What an op's numpy rule reads of a node, for one instruction of a program."""

    def __init__(self, lead, shape, attrs):
        self.lead, self.shape, self.attrs = lead, shape, attrs

    def attr(self, key, default=None):
        return self.attrs.get(key, default)


def _fused_numpy(node, *arrays):
    """Run the program instruction by instruction with each op's own numpy rule."""
    results = []
    for op, shape, attrs, args in node.attr("prog"):
        vals = [arrays[k] if kind == "in" else results[k] for kind, k in args]
        results.append(OPS[op].numpy(_View(node.lead, shape, dict(attrs)), *vals))
    return results[-1]


if "fused" not in OPS:
    register("fused", lambda inputs, attrs: (attrs["shape"], "float"), _fused_numpy, None, elementwise=True,
             row_local=True, cuda_reuses_cpu=True)


def _program(node, inputs):
    if node.op == "fused":
        return node.attr("prog"), inputs
    attrs = tuple(sorted(node.attrs.items()))
    return ((node.op, node.shape, attrs, tuple(("in", k) for k in range(len(inputs)))),), inputs


def _splice(prog, leaves, sub_prog, sub_inputs):
    """Append ``sub_prog`` (over ``sub_inputs``) to ``prog``; returns the arg naming its result. ``leaves`` maps
    each input of the fused node to its position, in order."""
    base = len(prog)
    for op, shape, attrs, args in sub_prog:
        new_args = []
        for kind, k in args:
            if kind == "t":
                new_args.append(("t", base + k))
            else:
                new_args.append(("in", _leaf(leaves, sub_inputs[k])))
        prog.append((op, shape, attrs, tuple(new_args)))
    return ("t", len(prog) - 1)


def _leaf(leaves: dict, node) -> int:
    return leaves.setdefault(node, len(leaves))      # nodes hash by identity


#: ops cheap enough to recompute inside a scan rather than store in a map and read back (no transcendentals)
ARITHMETIC = ops_with(arithmetic=True)


def _arithmetic(node) -> bool:
    """Is ``node`` (or its whole program, when fused) plain arithmetic (:data:`ARITHMETIC`)?"""
    if node.op == "fused":
        return all(op in ARITHMETIC for op, *_ in node.attr("prog"))
    return node.op in ARITHMETIC


def fuse(graph: Graph) -> Graph:
    """Fuse single-consumer elementwise chains (see the module docstring)."""
    count = uses(graph)
    stages = build_schedule(graph)
    stage_of = {n: k for k, s in enumerate(stages) for n in s.nodes}

    def same_stage(old, consumer) -> bool:
        # or an earlier map stage into a later one (both loop over every index): a ReLU's mask, computed in the
        # forward stage, is then recomputed where the backward reads it instead of being stored in between;
        # or a map's cheap arithmetic into a later scan: an LSTM's gate derivative s (1 - s), stored by a map
        # and read back by the reverse scan, is recomputed there from s (which the scan reads anyway)
        a, b = stage_of.get(old), stage_of.get(consumer)
        if a is None or b is None:
            return a == b
        return a == b or (a < b and stages[a].kind == "map" and (
            stages[b].kind == "map" or (stages[b].axis in old.axes and _arithmetic(old))))

    def inlinable(old, consumer) -> bool:
        return (old.op in FUSABLE or old.op == "fused") and count[old] == 1 and old.dtype == "float" \
            and same_stage(old, consumer) and old.axes == consumer.axes and old.batched == consumer.batched

    def fn(node, inputs, mapping):
        if node.op not in FUSABLE and node.op != "fused":
            return None
        own, _ = _program(node, inputs)
        size, inline = len(own), []
        for old, new in zip(node.inputs, inputs):      # inline inputs, in order, while at most MAX_FUSED
            grow = len(_program(new, new.inputs)[0]) if inlinable(old, node) else 0
            inline.append(0 < grow <= MAX_FUSED - size)
            size += grow if inline[-1] else 0
        if not any(inline):
            return None
        return spliced(node, inputs, own, inline)

    return remap(graph, rebuild(graph.roots(), fn))


def program_of(node) -> list:
    """``node``'s instructions as a fused program (one instruction for a plain elementwise op)."""
    return _program(node, node.inputs)[0]


def spliced(node, inputs: list, own: list, inline: list) -> Node:
    """``node`` (its program ``own``, its new ``inputs``) as one ``fused`` node with the programs of the inputs
    marked in ``inline`` spliced in ahead of its own instructions; the other inputs stay leaves."""
    prog, leaves, args = [], {}, []
    for new, splice in zip(inputs, inline):
        if splice:
            args.append(_splice(prog, leaves, *_program(new, new.inputs)))
        else:
            args.append(("in", _leaf(leaves, new)))
    # rewrite the node's own instructions: its ("in", k) args become the args computed above
    base = len(prog)
    for op, shape, attrs, a in own:
        prog.append((op, shape, attrs, tuple(args[k] if kind == "in" else ("t", base + k) for kind, k in a)))
    return Node("fused", tuple(leaves), {"prog": tuple(prog), "shape": node.shape}, node.shape, "float",
                node.axes, node.batched, node.where, node.name)
