"""An independent gradient: reverse mode over the *unrolled* DAG, node by node, on numbers.

It shares the ops' VJP rules with :mod:`rnnc.autodiff.grad` but none of its BPTT reasoning (no adjoint
signals, no shifted adjoint references): each (value, index) node pushes its adjoint to its own arguments.
Agreement of the two (to 1e-10 in float64) checks the rolled derivation.
"""
from __future__ import annotations

import networkx as nx
import numpy as np

from rnnc.interpret.evaluate import evaluate
from rnnc.interpret.unrolled import evaluate_unrolled
from rnnc.ir.graph import topo_order
from rnnc.ops import leaf, make, opdef
from rnnc.ops.registry import LEAVES
from rnnc.schedule.unroll import _resolve


def _unbroadcast(g: np.ndarray, batched_to: bool, shape: tuple, batched_from: bool) -> np.ndarray:
    if batched_from and not batched_to:
        g = g.sum(0)
    lead = int(batched_to)
    feat = g.shape[lead:]
    extra = len(feat) - len(shape)
    axes = tuple(range(lead, lead + extra))
    axes += tuple(lead + extra + k for k, s in enumerate(shape) if s == 1 and feat[extra + k] != 1)
    out = g.sum(axes, keepdims=True) if axes else g
    return out.reshape(out.shape[:lead] + shape)


def _numeric_vjp(node, arrays, in_axes, gbar, b, sizes):
    """Evaluate ``node``'s symbolic VJP on concrete arrays (a throw-away graph of leaves)."""
    leaves = [leaf("param", f"a{k}", i.shape, i.dtype, axes, i.batched)
              for k, (i, axes) in enumerate(zip(node.inputs, in_axes))]
    attrs = dict(node.attrs)
    mini = make(node.op, leaves, **attrs)
    g_leaf = leaf("param", "g", mini.shape, "float", mini.axes, mini.batched)
    outs = opdef(node.op).vjp(mini, g_leaf)
    env = {lf: a for lf, a in zip(leaves, arrays)}
    env[g_leaf] = gbar
    live = [o for o in outs if o is not None]
    for n in topo_order(live):
        if n in env:
            continue
        if n.op == "const":
            env[n] = np.asarray(n.attr("value"), dtype=b.dtype)
            continue
        env[n] = evaluate(n, [env[i] for i in n.inputs], [i.axes for i in n.inputs], n.axes,
                          sizes, b.batch, b.dtype)
    return [None if o is None else env[o] for o in outs]


def _push(adj, arg, contribution, keep=None):
    if isinstance(arg, tuple) and arg and arg[0] == "stack":
        keys = arg[2]
        for sub in np.ndindex(keys.shape):
            if keep is not None and not keep(arg[1], sub):
                continue
            adj[keys[sub]] = adj[keys[sub]] + contribution[sub] if keys[sub] in adj else contribution[sub]
    else:
        adj[arg] = adj[arg] + contribution if arg in adj else contribution


def unrolled_gradients(g: nx.DiGraph, inputs: dict, params: dict, dtype=None, window=None) -> dict:
    """dLoss/dparam for every param, by reverse mode over the unrolled graph ``g`` (from ``m.unroll``).

    ``window=(axis, steps, start)`` restricts it the brute-force way truncated BPTT is defined: only losses at
    ``steps`` are seeded, and nothing propagates from a node whose index along ``axis`` is below ``start``.
    """
    graph = g.graph["graph"]
    values, b, _ = evaluate_unrolled(g, inputs, params, dtype)
    loss_key, _ = _resolve(graph, graph.loss, {}, g.graph["sizes"])
    adj = {loss_key: np.asarray(1.0, dtype=b.dtype)}
    for key in reversed(list(nx.topological_sort(g))):
        if key not in adj:
            continue
        attrs = g.nodes[key]
        node, gbar = attrs["ir"], adj[key]
        keep = None
        if window is not None:
            axis, steps, start = window
            if axis in attrs["index"] and 0 <= attrs["index"][axis] < start:
                continue
            if axis not in attrs["index"]:
                def keep(dropped, sub, axis=axis, steps=steps):
                    return axis not in dropped or sub[dropped.index(axis)] in steps
        if attrs["op"] == "initial":
            if attrs["args"]:
                init = attrs["init_ref"].inputs[0]
                _push(adj, attrs["args"][0], _unbroadcast(gbar, init.batched, init.shape, node.batched))
            continue
        if node.op in LEAVES or opdef(node.op).vjp is None:
            continue
        if node.op == "spread":
            _push(adj, attrs["args"][0], gbar)
            continue
        if node.op == "to_batch":
            _push(adj, attrs["args"][0], gbar.sum(0))
            continue
        arrays = [values[a] if not (isinstance(a, tuple) and a[0] == "stack") else
                  np.stack([values[k] for k in a[2].reshape(-1)]).reshape(a[2].shape + values[a[2].flat[0]].shape)
                  for a in attrs["args"]]
        in_axes = [a[1] if isinstance(a, tuple) and a[0] == "stack" else () for a in attrs["args"]]
        sizes = dict(b.sizes)     # a stack may hold fewer steps than the axis (last / first read one)
        for a in attrs["args"]:
            if isinstance(a, tuple) and a[0] == "stack":
                sizes.update(zip(a[1], a[2].shape))
        for arg, inp, c in zip(attrs["args"], node.inputs, _numeric_vjp(node, arrays, in_axes, gbar, b, sizes)):
            if c is not None and inp.dtype == "float":
                _push(adj, arg, c, keep)
    out = {}
    for name, p in graph.params.items():
        key = (p.id, ())
        out[name] = adj.get(key, np.zeros(p.shape, dtype=b.dtype))
    return out


def truncated_reference(g: nx.DiGraph, inputs: dict, params: dict, k1: int, k2: int, axis=None, dtype=None):
    """Brute-force truncated BPTT on the unrolled graph: one windowed reverse pass per chunk, summed."""
    sizes = g.graph["sizes"]
    axis = axis or next(a for a in sizes if a.name == "t")
    size = sizes[axis]
    total = None
    for begin in range(0, size, k1):
        end = min(begin + k1, size) - 1
        part = unrolled_gradients(g, inputs, params, dtype, (axis, set(range(begin, end + 1)), end - k2 + 1))
        total = part if total is None else {k: total[k] + part[k] for k in total}
    return total
