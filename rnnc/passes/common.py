"""Helpers shared by the passes: rebuilding a graph's roots through a node mapping, and use counts."""
from __future__ import annotations

from collections import Counter

from rnnc.ir.graph import Graph


def remap(graph: Graph, mapping: dict) -> Graph:
    """The same graph with every root replaced through ``mapping`` (old node -> new node)."""
    def m(n):
        return mapping.get(n, n) if n is not None else None
    return graph.replace(
        values={k: m(v) for k, v in graph.values.items()},
        outputs={k: m(v) for k, v in graph.outputs.items()},
        grads={k: m(v) for k, v in graph.grads.items()},
        inits={k: m(v) for k, v in graph.inits.items()},
        loss=m(graph.loss),
    )


def uses(graph: Graph) -> Counter:
    """How many times each node is read: by input edges, by references (their value), and as a root."""
    count: Counter = Counter()
    for n in graph.nodes:
        for i in n.inputs:
            count[i] += 1
        if n.op == "ref":
            count[graph.value_of(n)] += 1
    for r in graph.roots():
        count[r] += 1
    return count
