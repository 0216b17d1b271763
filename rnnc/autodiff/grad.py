"""Symbolic BPTT: the gradient of a model is another rnnc graph.

Reverse mode over the *rolled* graph with one extra rule. Every named value ``v`` (signal or sequence input)
gets an adjoint signal ``d_v`` over the same axes. For a reference ``r = v[t-k]`` read somewhere with adjoint
``r̄``, the value at index ``t`` receives ``r̄`` from index ``t+k``:

.. math::  \\bar v[t] = \\sum_{\\text{direct uses}} \\bar c[t] + \\sum_{r = v[t-k]} \\bar r[t+k]

so the adjoint of a forward scan reads ``t+1`` and the schedule finds, with no special case, that it is a
reverse scan. A reference's initial value receives ``sum_t r̄[t]`` over the indices where the read fell out of
range (``edge_sum``). A param's adjoint is reduced over every loop axis and the batch by the ops' VJPs (a map
stage; one large product in a backend).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import networkx as nx

from rnnc.errors import GraphError
from rnnc.ir.graph import Graph
from rnnc.ir.names import fresh_name
from rnnc.ir.node import Node
from rnnc.ir.where import at
from rnnc.ops import as_node, opdef, ref
from rnnc.ops.reduce import expand, spread, sum_to, to_batch
from rnnc.ops.registry import ops_with

#: ops whose output carries no gradient (the op table's ``differentiable=False``: const, lengths, masks, one_hot)
NO_GRAD = ops_with(differentiable=False)


@dataclass
class Adjoints:
    """Bookkeeping of one reverse sweep."""

    contrib: dict      # node -> list of adjoint contributions
    direct: dict       # value name -> contributions to its defining node from direct uses
    refs: dict         # ref node -> its adjoint
    leaves: dict       # param / axis-free input leaf -> its adjoint


def _relevant(graph: Graph, final=None) -> set:
    """Nodes whose value can change the loss (through inputs, references and initial values), or the values
    of the signals named in ``final`` (whose adjoint at the axis's end is given)."""
    dg = nx.DiGraph()
    for n in graph.nodes:
        dg.add_node(n)
        for i in n.inputs:
            dg.add_edge(i, n)
        if n.op == "ref":
            dg.add_edge(graph.value_of(n), n)
    if graph.loss is None and not final:
        raise GraphError(f"model {graph.name!r} has no loss (m.loss(...)); there is nothing to differentiate")
    roots = ([graph.loss] if graph.loss is not None else []) + [graph.values[v] for v in (final or {})]
    return set(roots).union(*(nx.ancestors(dg, root) for root in roots))


def _conform(node: Node, like: Node) -> Node:
    """Broadcast an adjoint contribution to ``like``'s axes and batch."""
    for axis in like.axes:
        if axis not in node.axes:
            node = spread(node, axis)
    if like.batched and not node.batched:
        node = to_batch(node)
    if node.shape != like.shape:
        node = node + expand(as_node(0.0), like.shape)
    return node


def _total(terms):
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out


def sweep(graph: Graph, names: dict, relevant: set, seed: bool = True, hooks=None) -> Adjoints:
    """Reverse sweep over the rolled graph; a value's defining node takes the adjoint ``d_v[index]``.

    ``hooks`` (truncated BPTT) may mask what enters the loop axis from axis-free values (``hooks.seed``) and
    what reaches initial values (``hooks.init``).
    """
    defs = {node: name for name, node in graph.values.items() if name in names}
    adj = Adjoints(defaultdict(list), defaultdict(list), {}, {})
    if seed and graph.loss is not None:
        adj.contrib[graph.loss].append(as_node(1.0))
    for node in reversed(graph.nodes):
        if node not in relevant:
            continue
        terms = adj.contrib.get(node, [])
        with at(node.where):                 # the adjoint's nodes point at the user's line of ``node``
            if node in defs:
                name = defs[node]
                adj.direct[name].extend(terms)
                g = ref(names[name], node.axes, node.shape, "float", node.batched, None, 0, where=node.where)
            elif not terms:
                continue
            else:
                g = _total(terms)
            _propagate(node, g, adj, relevant, hooks)
    return adj


def _propagate(node: Node, g: Node, adj: Adjoints, relevant: set, hooks=None) -> None:
    if node.op == "ref":
        adj.refs[node] = g
        if node.inputs and node.inputs[0] in relevant:
            from rnnc.ops.reduce import edge_sum

            init = node.inputs[0]
            mask = hooks.init(node) if hooks else None
            g = g * mask if mask is not None else g
            adj.contrib[init].append(sum_to(edge_sum(g, node.attr("axis"), node.attr("offset")), init))
        return
    if node.op in ("param", "input"):
        adj.leaves[node] = g
        return
    if node.op in NO_GRAD:
        return
    rule = opdef(node.op).vjp
    if rule is None:
        raise GraphError(f"op {node.op!r} ({node.label()} at {node.where}) has no VJP rule; "
                         f"rnnc cannot differentiate through it")
    for inp, c in zip(node.inputs, rule(node, g)):
        if c is not None and inp in relevant and inp.dtype == "float" and inp.op not in NO_GRAD:
            mask = hooks.seed(node, inp) if hooks else None
            adj.contrib[inp].append(c * mask if mask is not None else c)


def adjoint_equations(graph: Graph, names: list, sweeps: list, dst: int, taken: set, cut=None,
                      final=None) -> dict:
    """Equations of stream ``dst``: ``d_v`` for every value, plus one ``d_v_tm1``-style signal per shift
    (what flows back through ``v[t-1]``), read one step later: ``d_v[t] = direct[t] + d_v_tm1[t+1]``.

    ``final`` (value name -> (axis, axis-free node)): the adjoint entering ``v``'s last step from beyond the end
    of ``axis`` is the initial value of the read ``d_v_tm1[t+1]`` there (zero otherwise); see
    :func:`gradient_graph`.

    Full BPTT has one stream. With ``cut = (axis, k1, k2)`` (truncated BPTT) what flows back along ``axis``
    may come from any stream and is masked per step (see :mod:`rnnc.autodiff.truncate`).
    """
    from rnnc.ops.leaves import tbptt_mask

    out = {}
    for v, dname in names[dst].items():
        value = graph.values[v]
        with at(value.where):
            terms = list(sweeps[dst].direct.get(v, []))
            for src, adj in enumerate(sweeps):
                shifted = defaultdict(list)
                if final and v in final:         # a flow to carry the adjoint from beyond the end, if none
                    shifted[(final[v][0], -1)] = []
                for r, g in adj.refs.items():
                    if r.attr("value") != v:
                        continue
                    along_cut = cut is not None and r.attr("offset") and r.attr("axis") == cut[0]
                    if src != dst and not along_cut:
                        continue
                    if r.attr("offset"):
                        shifted[(r.attr("axis"), r.attr("offset"))].append(g)
                    else:
                        terms.append(g)
                for (axis, off), gs in sorted(shifted.items(), key=lambda kv: (kv[0][0].order, kv[0][1])):
                    flow = _conform(_total(gs), value) if gs else _zeros_like(value)
                    label = f"{dname}_{axis.name}{'m' if off < 0 else 'p'}{abs(off)}"
                    if cut is not None and axis == cut[0]:
                        flow = flow * tbptt_mask(axis, cut[1], cut[2], -off, src, dst, "flow")
                        label += f"_from{src}" if src != dst else ""
                    via = fresh_name(label, taken)
                    out[via] = _conform(flow, value)
                    init = final[v][1] if final and v in final and (axis, off) == (final[v][0], -1) else None
                    terms.append(ref(via, value.axes, value.shape, "float", value.batched, axis, -off, init=init,
                                     where=value.where))
            if not terms:
                terms = [expand(as_node(0.0), value.shape)]
            out[dname] = _conform(_total([_conform(term, value) for term in terms]), value)
    return out


def collect_grads(graph: Graph, wrt, names: list, sweeps: list, values: dict) -> dict:
    """The ``grads`` roots: summed over streams; adjoint signals for signals and sequence inputs."""
    grads = {}
    for name in wrt:
        if name in names[0]:
            with at(graph.values[name].where):
                grads[name] = _total([values[n[name]] for n in names])
            continue
        leaf = graph.params[name] if name in graph.params else graph.inputs[name]
        parts = [adj.leaves[leaf] for adj in sweeps if leaf in adj.leaves]
        with at(leaf.where):
            grads[name] = _total(parts) if parts else _zeros_like(leaf)
    return grads


def gradient_graph(graph: Graph, wrt=None, final=None) -> Graph:
    """The gradient model of ``graph``: its forward equations, adjoint signals, and ``grads`` roots.

    ``final`` (signal name -> ``(axis, lam)``, ``lam`` an axis-free input leaf of the signal's shape and batch):
    the gradient of :math:`L + \\sum_v \\langle \\lambda_v, v[n-1] \\rangle` along ``axis`` of ``n`` steps
    (a later segment's adjoint of the state leaving this one, :mod:`rnnc.runtime.segments`) without that term
    in the loss: :math:`\\lambda_v` is the initial value of the reverse scan's read ``d_v_tm1[t+1]``, so
    :math:`\\bar v[n-1] = \\mathrm{direct}[n-1] + \\lambda_v`. The ``lam`` leaves become inputs.
    """
    wrt = list(graph.params) if wrt is None else list(wrt)
    _check_wrt(graph, wrt)
    relevant = _relevant(graph, final)
    taken = set(graph.values) | set(graph.inputs) | set(graph.params) | set(graph.outputs)
    names = {v: fresh_name(f"d_{v}", taken) for v, node in graph.values.items()
             if node in relevant and (v in graph.signals or v in wrt)}
    sweeps = [sweep(graph, names, relevant)]
    new_values = adjoint_equations(graph, [names], sweeps, 0, taken, final=final)
    grads = collect_grads(graph, wrt, [names], sweeps, new_values)
    inputs = {**graph.inputs, **{lam.name: lam for _, lam in (final or {}).values()}}
    return Graph(f"{graph.name}_grad", inputs, dict(graph.params), dict(graph.param_inits),
                 {**graph.values, **new_values}, tuple(graph.signals) + tuple(new_values), dict(graph.outputs),
                 graph.loss, grads, dict(graph.lengths), dict(graph.inits),
                 {"forward": graph, "adjoints": dict(names), "wrt": tuple(wrt)})


def _zeros_like(leaf: Node) -> Node:
    z = expand(as_node(0.0), leaf.shape)
    for axis in leaf.axes:
        z = spread(z, axis)
    return to_batch(z) if leaf.batched else z


def _check_wrt(graph: Graph, wrt) -> None:
    valid = set(graph.params) | {n for n, v in graph.inputs.items() if v.dtype == "float" and v.op == "input"}
    valid |= set(graph.signals)
    bad = [w for w in wrt if w not in valid]
    if bad:
        raise ValueError(f"cannot differentiate with respect to {', '.join(map(repr, bad))}: expected params, "
                         f"float inputs or signals of {graph.name!r}: {sorted(valid)}")
