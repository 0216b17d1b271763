"""Constant folding: elementwise ops on constants become constants; ``x * 1``, ``x + 0``, ``x - 0`` and
``x / 1`` become ``x`` when that changes no shape, axis or batch."""
from __future__ import annotations

import numpy as np

from rnnc.ir.graph import Graph, rebuild
from rnnc.ir.node import Node
from rnnc.ops import OPS
from rnnc.passes.common import remap

_IDENTITY = {"mul": 1.0, "add": 0.0, "sub": 0.0, "div": 1.0}


class _Scalar:
    lead = 0

    def __init__(self, node):
        self.attrs, self.shape = node.attrs, node.shape

    def attr(self, key, default=None):
        return self.attrs.get(key, default)


def _const(node, value) -> Node:
    return Node("const", (), {"value": float(value)}, (), "float", (), False, node.where)


def _fold(node, inputs, mapping):
    spec = OPS.get(node.op)
    if spec is None or not spec.elementwise or node.shape or not inputs:
        return None
    if all(i.op == "const" for i in inputs):
        vals = [np.asarray(i.attr("value"), dtype=np.float64) for i in inputs]
        with np.errstate(all="ignore"):
            return _const(node, spec.numpy(_Scalar(node), *vals))
    return None


def _identity(node, inputs):
    if node.op not in _IDENTITY or len(inputs) != 2:
        return None
    a, b = inputs
    unit = _IDENTITY[node.op]
    for keep, other, ok in ((a, b, True), (b, a, node.op in ("mul", "add"))):
        if ok and other.op == "const" and other.attr("value") == unit and (
                keep.shape, keep.axes, keep.batched, keep.dtype) == (node.shape, node.axes, node.batched, "float"):
            return keep
    return None


def fold(graph: Graph) -> Graph:
    """Fold constants and drop identity operations."""
    defs = {id(v) for v in graph.values.values()}

    def fn(node, inputs, mapping):
        if id(node) in defs:
            return None
        return _fold(node, inputs, mapping) or _identity(node, inputs)

    return remap(graph, rebuild(graph.roots(), fn))
