"""The unrolled interpreter: evaluate the acyclic unrolled graph node by node, in topological order.

It shares no scheduling with :mod:`rnnc.interpret.rolled`; agreement of the two is the check that the
schedule preserves meaning.
"""
from __future__ import annotations

import itertools

import networkx as nx
import numpy as np

from rnnc.interpret.bind import bind
from rnnc.interpret.evaluate import evaluate, initial_fill
from rnnc.interpret.rolled import Result, _loss_only_inputs
from rnnc.schedule.unroll import _resolve


def _gather(arg, values):
    if not isinstance(arg, tuple) or arg[0] != "stack":
        return values[arg]
    _, dropped, keys = arg
    flat = [values[k] for k in keys.reshape(-1)]
    return np.stack(flat).reshape(keys.shape + flat[0].shape)


def interpret_unrolled(g: nx.DiGraph, inputs: dict, params: dict, dtype=None, batch=None) -> Result:
    """Evaluate an unrolled graph (from ``m.unroll(...)``) on arrays, one (value, index) node at a time."""
    values, _, dead = evaluate_unrolled(g, inputs, params, dtype, batch)
    return _collect(g.graph["graph"], g.graph["sizes"], values, dead)


def evaluate_unrolled(g: nx.DiGraph, inputs: dict, params: dict, dtype=None, batch=None):
    """Every unrolled node's array: returns (values by key, the input binding, keys that could not run)."""
    graph, sizes = g.graph["graph"], g.graph["sizes"]
    b = bind(graph, inputs, params, dtype, {a.name: s for a, s in sizes.items()}, batch,
             optional=_loss_only_inputs(graph))
    for axis, size in sizes.items():
        if b.sizes[axis] != size:
            raise ValueError(f"the graph was unrolled for {axis.name}={size}, the inputs have "
                             f"{axis.name}={b.sizes[axis]}")
    values = {}
    dead = set()
    for key in nx.topological_sort(g):
        attrs = g.nodes[key]
        node, idx = attrs["ir"], attrs["index"]
        if any((a if not isinstance(a, tuple) or a[0] != "stack" else None) in dead for a in attrs["args"]):
            dead.add(key)
            continue
        if attrs["op"] == "initial":
            init = values[attrs["args"][0]] if attrs["args"] else None
            values[key] = initial_fill(attrs["init_ref"], init, node, (), b.sizes, b.batch, b.dtype)
        elif node.op in ("input", "lengths"):
            if node not in b.arrays:
                dead.add(key)
                continue
            values[key] = b.arrays[node][tuple(idx[a] for a in node.axes)]
        elif node.op == "param":
            values[key] = b.arrays[node]
        elif node.op == "const":
            values[key] = np.asarray(node.attr("value"), dtype=b.dtype)
        else:
            arrays = [_gather(a, values) for a in attrs["args"]]
            in_axes = [a[1] if isinstance(a, tuple) and a[0] == "stack" else () for a in attrs["args"]]
            values[key] = evaluate(node, arrays, in_axes, (), b.sizes, b.batch, b.dtype, idx)
    return values, b, dead


def _assemble(graph, node, sizes, values, dead):
    keys = {}
    for index in itertools.product(*(range(sizes[a]) for a in node.axes)):
        key, _ = _resolve(graph, node, dict(zip(node.axes, index)), sizes)
        if key in dead or key not in values:
            return None
        keys[index] = values[key]
    if not node.axes:
        return keys[()]
    first = next(iter(keys.values()))
    out = np.empty(tuple(sizes[a] for a in node.axes) + first.shape, dtype=first.dtype)
    for index, v in keys.items():
        out[index] = v
    return out


def _collect(graph, sizes, values, dead) -> Result:
    outputs = {k: _assemble(graph, v, sizes, values, dead) for k, v in graph.outputs.items()}
    loss = None
    if graph.loss is not None:
        arr = _assemble(graph, graph.loss, sizes, values, dead)
        loss = None if arr is None else float(arr)
    grads = {k: _assemble(graph, v, sizes, values, dead) for k, v in graph.grads.items()}
    sig = {s: _assemble(graph, graph.values[s], sizes, values, dead) for s in graph.signals}
    return Result(outputs, loss, {k: v for k, v in grads.items() if v is not None},
                  {k: v for k, v in sig.items() if v is not None})
