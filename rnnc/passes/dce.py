"""Dead-code removal: keep only what the requested roots need (through inputs and references)."""
from __future__ import annotations

from rnnc.ir.graph import Graph


def needed(graph: Graph, roots) -> set:
    """Nodes the ``roots`` depend on, following input edges and reference -> value edges (iterative)."""
    seen, stack = set(), list(roots)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(n.inputs)
        if n.op == "ref":
            stack.append(graph.value_of(n))
    return seen


def prune(graph: Graph, outputs: bool = True, loss: bool = True, grads: bool = True) -> Graph:
    """Keep the chosen roots (outputs, loss, gradients) and every value, input and init they need."""
    roots = []
    if outputs:
        roots += list(graph.outputs.values())
    if loss and graph.loss is not None:
        roots.append(graph.loss)
    if grads:
        roots += list(graph.grads.values())
    keep = needed(graph, roots)
    values = {k: v for k, v in graph.values.items() if v in keep}
    return graph.replace(
        values=values,
        signals=tuple(s for s in graph.signals if s in values),
        outputs=graph.outputs if outputs else {},
        loss=graph.loss if loss else None,
        grads=graph.grads if grads else {},
        inits={k: v for k, v in graph.inits.items() if k in values},
    )


def dce(graph: Graph) -> Graph:
    """Pass form of :func:`prune` (all roots kept): drops values nothing reads."""
    return prune(graph)
