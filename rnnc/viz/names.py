"""The names a drawing shows: the lecture's, not the compiler's.

* the loss is ``L``; a per-step loss term (what ``L`` sums over the steps) is ``L[t]``;
* in a gradient model (``rc.grad``) the adjoint ``d_h`` of a value ``h`` is ``δh`` and the gradient
  ``grad_W`` of a param ``W`` is ``∂L/∂W``;
* a value written inline that has weights of its own on both sides (``tanh(U @ x[t] + W @ o[t-1])`` in
  ``o[t] = V @ tanh(U @ x[t] + W @ o[t-1] + b) + c``, the lecture's hidden layer of pattern 2) is drawn too,
  named after the variable the user's line assigns it to (``h = rc.tanh(...)``), else ``h`` (``h2``...);
* the adjoint *flows* the gradient model adds per delayed read (``d_h_tm1``: what flows back through
  ``h[t-1]``, read one step later) are not drawn: an edge ``δh → δh`` labelled ``Wᵀ, t+1`` stands for them,
  as in the lecture's BPTT figure.
"""
from __future__ import annotations

import ast
import linecache
from dataclasses import dataclass, field

from rnnc.ir.graph import Graph
from rnnc.ir.node import Node
from rnnc.ops.registry import OPS

NOT_LAYERS = ("neg", "positive", "square", "sqrt")


@dataclass(frozen=True)
class Names:
    """``labels``: drawn node -> its base label; ``hidden``: named values the drawing contracts away;
    ``backward``: the adjoints and gradients of a gradient model (what a forward value's edge into them
    means is "is read by", drawn lightly)."""

    labels: dict
    hidden: frozenset
    backward: frozenset = frozenset()
    inline: dict = field(default_factory=dict)

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
    inline = inline_values(graph)
    labels.update(inline)
    return Names(labels, frozenset(hidden), frozenset(backward), inline)


def inline_values(graph: Graph) -> dict:
    """Unnamed activations between two weight matrices (``V @ tanh(W @ ... )``) -> the name to draw."""
    named = graph.named()
    taken = set(named.values()) | set(graph.values)
    found = {}
    for n in graph.nodes:
        if n.op == "matmul" and _is_weight(n.inputs[0]):
            a = n.inputs[1]
            if a not in named and a not in found and _is_layer(a) and _reads_weights(a, named):
                found[a] = _fresh(_assigned_name(a) or "h", taken)
    return found


def _is_weight(n: Node) -> bool:
    return n.op == "param" or (n.op == "transpose" and n.inputs[0].op == "param")


def _is_layer(n: Node) -> bool:
    spec = OPS.get(n.op)
    return spec is not None and spec.elementwise and len(n.inputs) == 1 and n.op not in NOT_LAYERS


def _reads_weights(n: Node, named: dict) -> bool:
    """Whether ``n`` is computed (through unnamed nodes) from a product with a weight matrix."""
    stack, seen = list(n.inputs), set()
    while stack:
        m = stack.pop()
        if m in seen or m in named or m.op in ("ref", "param", "input", "const"):
            continue
        seen.add(m)
        if m.op == "matmul" and _is_weight(m.inputs[0]):
            return True
        stack.extend(m.inputs)
    return False


def _assigned_name(n: Node) -> str | None:
    """``h`` when the user's line reads ``h = rc.tanh(...)`` and ``n`` is that tanh."""
    path, _, line = n.where.rpartition(":")
    if not line.isdigit():
        return None
    try:
        tree = ast.parse(linecache.getline(path, int(line)).strip())
    except SyntaxError:
        return None
    stmt = tree.body[0] if len(tree.body) == 1 else None
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        return None
    call = stmt.value
    func = getattr(call, "func", None)
    called = getattr(func, "attr", None) or getattr(func, "id", None)
    return stmt.targets[0].id if called == n.op else None


def _fresh(name: str, taken: set) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}{k}", k + 1
    taken.add(out)
    return out


def transposed(name: str) -> str:
    """``Wᵀ``: a param read transposed (the adjoint of ``W @ h`` reads ``Wᵀ``)."""
    return f"{name}ᵀ"
