"""A lowered model: named leaves, the equations of named values, and roots; plus iterative traversals."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rnnc.ir.node import Axis, Node


@dataclass(frozen=True, eq=False)
class Graph:
    """The IR of a model.

    ``values`` maps every name a reference can read (signals and sequence inputs) to its defining node;
    ``signals`` lists which of them are defined by equations. ``nodes`` holds every reachable node in a
    topological order of input edges (references are leaves that read ``values`` by name; a reference's
    single input, when present, is its initial value).
    """

    name: str
    inputs: dict            # name -> input / lengths leaf
    params: dict            # name -> param leaf
    param_inits: dict       # name -> init spec (see rnnc.dsl.init)
    values: dict            # name -> defining node
    signals: tuple          # names of signals
    outputs: dict           # name -> node
    loss: Node | None
    grads: dict = field(default_factory=dict)   # name -> gradient node (gradient models)
    lengths: dict = field(default_factory=dict)  # Axis -> lengths leaf
    inits: dict = field(default_factory=dict)    # signal name -> initial-value node
    meta: dict = field(default_factory=dict)     # free-form (e.g. truncation / checkpoint options)

    def __post_init__(self):
        object.__setattr__(self, "nodes", topo_order(self.roots()))

    def roots(self) -> list[Node]:
        out = list(self.outputs.values()) + list(self.grads.values())
        out += list(self.values.values())
        out += list(self.inits.values())
        if self.loss is not None:
            out.append(self.loss)
        return out

    def refs(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "ref"]

    def value_of(self, ref: Node) -> Node:
        return self.values[ref.attr("value")]

    def replace(self, **changes) -> Graph:
        return dataclasses.replace(self, **changes)

    def axes(self) -> list[Axis]:
        seen = {a for n in self.nodes for a in n.axes}
        seen |= {n.attr("axis") for n in self.nodes if isinstance(n.attr("axis"), Axis)}
        return sorted(seen, key=lambda a: a.order)

    def named(self) -> dict:
        """Names a user sees (signals, outputs, loss, gradients) for each node that has one."""
        out = {}
        for name, n in self.inputs.items():
            out.setdefault(n, name)
        for name, n in self.params.items():
            out.setdefault(n, name)
        for name in self.signals:
            out.setdefault(self.values[name], name)
        for name, n in self.outputs.items():
            out.setdefault(n, name)
        for name, n in self.grads.items():
            out.setdefault(n, f"grad_{name}")
        if self.loss is not None:
            out.setdefault(self.loss, "loss")
        return out


def static_sizes(graph: Graph) -> dict:
    """Axis sizes fixed by the graph itself: nodes such as ``to_grid`` declare ``static_sizes`` attrs
    (pairs ``(axis, size)``). Returns ``{Axis: size}``; two different sizes for one axis are an error."""
    from rnnc.errors import GraphError

    out: dict = {}
    for n in graph.nodes:
        for axis, size in n.attrs.get("static_sizes", ()) or ():
            if out.setdefault(axis, size) != size:
                raise GraphError(f"axis {axis.name!r} gets static size {out[axis]} and {size} (at {n.where})")
    return out


def topo_order(roots: Iterable[Node], extra: Callable[[Node], tuple] | None = None) -> list[Node]:
    """All nodes reachable from ``roots`` through input edges, inputs before consumers (iterative DFS).

    ``extra(node)`` may name more predecessors than ``node.inputs`` (used while lowering).
    """
    order, state = [], {}
    for root in roots:
        if root in state:
            continue
        stack = [(root, 0)]
        state[root] = 1
        while stack:
            node, k = stack.pop()
            preds = node.inputs + extra(node) if extra else node.inputs
            if k < len(preds):
                stack.append((node, k + 1))
                child = preds[k]
                if child not in state:
                    state[child] = 1
                    stack.append((child, 0))
            else:
                state[node] = 2
                order.append(node)
    return order


def rebuild(roots: Iterable[Node], fn: Callable[[Node, tuple, dict], Node | None], extra=None) -> dict:
    """Rebuild the graph under ``roots`` bottom-up.

    ``fn(node, new_inputs, mapping)`` returns a replacement node or None (keep: the node is copied only if
    an input changed). Returns the mapping old node -> new node.
    """
    mapping: dict = {}
    for node in topo_order(roots, extra):
        new_inputs = tuple(mapping[i] for i in node.inputs)
        out = fn(node, new_inputs, mapping)
        if out is None:
            if all(a is b for a, b in zip(new_inputs, node.inputs)):
                out = node
            else:
                out = dataclasses.replace(node, inputs=new_inputs, id=_fresh_id())
        mapping[node] = out
    return mapping


def _fresh_id() -> int:
    from rnnc.ir.node import _node_ids

    return next(_node_ids)
