"""Dead-code removal: keep only what the requested roots need (through inputs and references)."""
from __future__ import annotations

from rnnc.ir.graph import Graph, rebuild, topo_order

#: ``Graph.meta`` key: names of values that only the graph's own references read; no caller reads them after a
#: kernel returns (set by :func:`drop_unread_values`), so a backend may keep fewer steps of them than all
INTERNAL = "internal_values"


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


def drop_unread_values(graph: Graph) -> Graph:
    """``graph`` with reads ``v[t]`` of a value at its own step (references of offset 0) made reads of the value's
    node, and keeping as named values only those a reference still reads by name; its outputs must be pruned
    already (``prune(graph, outputs=False)``). For kernels that return the loss and gradients only: every named
    value is a result a kernel stores for every step, and the adjoint signals ``d_h``, ``d_c`` of an LSTM's
    gradient are two ``(T, B, H)`` arrays nothing else needs (step buffers of the reverse scan without a name).
    The values kept are listed in ``meta[INTERNAL]``: results of no kernel
    (see :func:`rnnc.backends.cpu.refs.plan_rings`)."""
    if graph.outputs:
        raise ValueError("drop_unread_values: prune the graph's outputs first")
    delayed = {r.attr("value") for r in graph.refs() if r.attr("offset")}

    def same(n):        # only values no other reference reads: the graph changes no more than it must
        if n.op != "ref" or n.attr("offset") or n.attr("value") not in graph.values or n.attr("value") in delayed \
                or graph.values[n.attr("value")].op in ("input", "param", "lengths"):
            return None
        v = graph.values[n.attr("value")]
        return v if (v.axes, v.shape, v.dtype, v.batched) == (n.axes, n.shape, n.dtype, n.batched) else None

    roots = list(graph.values.values()) + list(graph.grads.values()) + [n for n in [graph.loss] if n is not None]
    mapping = rebuild(roots, lambda n, inputs, m: m[same(n)] if same(n) is not None else None,
                      extra=lambda n: (same(n),) if same(n) is not None else ())
    read = {r.attr("value") for r in topo_order([mapping[r] for r in roots]) if r.op == "ref"}
    return graph.replace(values={k: mapping[v] for k, v in graph.values.items() if k in read},
                         meta={**graph.meta, INTERNAL: tuple(k for k in graph.values if k in read)},
                         signals=tuple(s for s in graph.signals if s in read),
                         grads={k: mapping[v] for k, v in graph.grads.items()}, loss=mapping.get(graph.loss),
                         inits={k: v for k, v in graph.inits.items() if k in read})
