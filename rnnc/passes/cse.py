"""Common-subexpression elimination: nodes with the same op, inputs and attributes become one node."""
from __future__ import annotations

import dataclasses

from rnnc.ir.graph import Graph, _fresh_id, topo_order
from rnnc.passes.common import remap

_NEVER = ("input", "param", "lengths")


def _key(node, inputs):
    try:
        attrs = tuple(sorted(node.attrs.items()))
        hash(attrs)
    except TypeError:
        return None
    return (node.op, tuple(id(i) for i in inputs), attrs, node.shape, node.dtype, node.axes, node.batched)


def cse(graph: Graph) -> Graph:
    """Merge structurally equal nodes in one bottom-up sweep (value definitions, read by name, stay apart)."""
    defs = {id(v) for v in graph.values.values()}
    mapping, canon = {}, {}
    for node in topo_order(graph.roots()):
        inputs = tuple(mapping[i] for i in node.inputs)
        same = all(a is b for a, b in zip(inputs, node.inputs))
        new = node if same else dataclasses.replace(node, inputs=inputs, id=_fresh_id())
        if node.op not in _NEVER and id(node) not in defs:
            key = _key(node, inputs)
            if key is not None:
                new = canon.setdefault(key, new)
        mapping[node] = new
    return remap(graph, mapping)
