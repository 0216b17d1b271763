"""Unrolling: one node per (value, index), plus initial-value nodes where a delayed read falls out of range.

The result is an acyclic ``networkx.DiGraph``. It defines meaning independently of the schedule (see
:func:`rnnc.interpret.interpret_unrolled`), and it is what the unrolled drawings show.
"""
from __future__ import annotations

import itertools

import networkx as nx
import numpy as np

from rnnc.ir.graph import Graph, static_sizes
from rnnc.ir.node import Node


def _resolve(graph: Graph, node: Node, idx: dict, sizes: dict):
    """The unrolled key that ``node`` at index ``idx`` stands for, following references.

    Returns (key, delay) where ``delay`` is the shift label of the last reference followed, if any.
    """
    delay = None
    while node.op == "ref":
        value = graph.value_of(node)
        offset, axis = node.attr("offset"), node.attr("axis")
        if offset:
            delay = f"{axis.name}{offset:+d}"
            k = idx[axis] + offset
            if not 0 <= k < sizes[axis]:
                index = tuple(k if a == axis else idx[a] for a in value.axes)
                return ("init", node.attr("value"), index), delay
            idx = {**idx, axis: k}
        node = value
    return (node.id, tuple(idx[a] for a in node.axes)), delay


def _label(node: Node, named: dict, index) -> str:
    base = named.get(node, node.op)
    return f"{base}[{','.join(map(str, index))}]" if index else base


class Unrolled(nx.DiGraph):
    """The unrolled graph: a ``networkx.DiGraph`` that Jupyter shows drawn (``rc.render`` draws it to a file)."""

    def _repr_svg_(self) -> str:
        from rnnc.viz import svg

        return svg(self)


def unroll(graph: Graph, sizes: dict) -> Unrolled:
    """Unroll ``graph`` for ``sizes`` (axis name -> size), e.g. ``unroll(g, {"t": 4})``."""
    by_name = {a.name: a for a in graph.axes()}
    sizes = {**{a.name: s for a, s in static_sizes(graph).items()}, **sizes}
    unknown = sorted(set(sizes) - set(by_name))
    if unknown:
        raise ValueError(f"model {graph.name!r} has no axis {', '.join(map(repr, unknown))}; "
                         f"its axes are {sorted(by_name)}")
    missing = sorted(set(by_name) - set(sizes))
    if missing:
        raise ValueError(f"unroll needs a size for axis {', '.join(map(repr, missing))}, e.g. "
                         f"m.unroll({missing[0]}=4)")
    axis_sizes = {by_name[n]: int(s) for n, s in sizes.items()}
    named = graph.named()
    g = Unrolled(graph=graph, sizes=axis_sizes, name=graph.name)
    for node in graph.nodes:
        if node.op == "ref":
            continue
        for index in itertools.product(*(range(axis_sizes[a]) for a in node.axes)):
            idx = dict(zip(node.axes, index))
            key = (node.id, index)
            args = []
            for inp in node.inputs:
                args.append(_arg(graph, g, node, inp, idx, axis_sizes, key, named))
            g.add_node(key, ir=node, index=idx, label=_label(node, named, index), args=args, op=node.op,
                       shape=node.shape, value=named.get(node))
    return g


def _arg(graph, g, node, inp, idx, axis_sizes, key, named):
    dropped = tuple(a for a in inp.axes if a not in node.axes)
    if not dropped:
        src, delay = _resolve(graph, inp, idx, axis_sizes)
        _link(graph, g, src, key, delay, named, axis_sizes)
        return src
    ranges = [range(axis_sizes[a]) for a in dropped]
    if node.op in ("last", "first") and len(node.inputs) == 1 and dropped == (node.attr("axis"),):
        size = axis_sizes[dropped[0]]               # without lengths only one step is read
        ranges = [range(size - 1, size) if node.op == "last" else range(0, 1)]
    keys = np.empty(tuple(len(r) for r in ranges), dtype=object)
    for pos, sub in zip(itertools.product(*(range(len(r)) for r in ranges)), itertools.product(*ranges)):
        src, delay = _resolve(graph, inp, {**idx, **dict(zip(dropped, sub))}, axis_sizes)
        _link(graph, g, src, key, delay, named, axis_sizes)
        keys[pos] = src
    return ("stack", dropped, keys)


def _link(graph, g, src, dst, delay, named, sizes):
    if src[0] == "init" and src not in g:
        _, value_name, index = src
        value = graph.values[value_name]
        ref = next((r for r in graph.refs() if r.attr("value") == value_name and r.inputs), None)
        args = []
        if ref is not None:
            init_key, _ = _resolve(graph, ref.inputs[0], {}, sizes)
            _link(graph, g, init_key, src, None, named, sizes)
            args.append(init_key)
        g.add_node(src, ir=value, index=dict(zip(value.axes, index)), op="initial", args=args,
                   label=f"{value_name}[{','.join(map(str, index))}]", shape=value.shape, value=value_name,
                   init_ref=ref)
    g.add_edge(src, dst, delay=delay)
