"""The names a drawing shows: the lecture's, not the compiler's.

* the loss is ``L``; a per-step loss term (what ``L`` sums over the steps) is ``L[t]``;
* in a gradient model (``rc.grad``) the adjoint ``d_h`` of a value ``h`` is ``δh`` and the gradient
  ``grad_W`` of a param ``W`` is ``∂L/∂W``;
* the adjoint *flows* the gradient model adds per delayed read (``d_h_tm1``: what flows back through
  ``h[t-1]``, read one step later) are not drawn: an edge ``δh → δh`` labelled ``Wᵀ, t+1`` stands for them,
  as in the lecture's BPTT figure.
"""
from __future__ import annotations

from dataclasses import dataclass

from rnnc.ir.graph import Graph
from rnnc.ir.node import Node


@dataclass(frozen=True)
class Names:
    """``labels``: drawn node -> its base label; ``hidden``: named values the drawing contracts away;
    ``backward``: the adjoints and gradients of a gradient model (what a forward value's edge into them
    means is "is read by", drawn lightly)."""

    labels: dict
    hidden: frozenset
    backward: frozenset = frozenset()

    def of(self, node: Node, fallback: str) -> str:
        return self.labels.get(node, fallback)


def names_of(graph: Graph) -> Names:
    """The user-facing labels of ``graph``'s named nodes (see the module docstring)."""
    labels: dict = {}
    hidden: set = set()
    backward: set = set(graph.grads.values())
    adjoints = graph.meta.get("adjoints") if graph.meta else None
    if adjoints:
        forward = graph.meta["forward"]
        for value, adjoint in adjoints.items():
            if adjoint in graph.values:
                labels[graph.values[adjoint]] = f"δ{value}"
                backward.add(graph.values[adjoint])
        shown = set(adjoints.values()) | set(forward.values)
        hidden = {name for name in graph.values if name not in shown}
    for name, node in graph.grads.items():
        labels.setdefault(node, f"∂L/∂{name}")
    if graph.loss is not None:
        labels[graph.loss] = "L"
    return Names(labels, frozenset(hidden), frozenset(backward))


def transposed(name: str) -> str:
    """``Wᵀ``: a param read transposed (the adjoint of ``W @ h`` reads ``Wᵀ``)."""
    return f"{name}ᵀ"
