"""Lowering a :class:`~rnnc.dsl.model.Model` to a validated :class:`~rnnc.ir.Graph`.

Besides checking names and axes, lowering makes two conveniences explicit so that every later stage (the
interpreters, autodiff, the backends) sees plain equations:

* initial values become the single input of each shifted reference that can read them;
* sequence lengths become ops: a signal recurring along an axis with lengths holds its value past a sample's
  length, ``s[t] = where(mask[t], f(...), s[t-1])`` (``s[t+1]`` for a reverse recurrence); loss terms and
  outputs are multiplied by the mask; ``last`` / ``sum`` / ``mean`` over the axis take the lengths.
"""
from __future__ import annotations

import dataclasses

from rnnc.errors import GraphError
from rnnc.ir.graph import Graph, rebuild
from rnnc.ir.where import at
from rnnc.ops import make, ref, step_mask, where
from rnnc.ops.reduce import spread, to_batch

_LENGTH_REDUCTIONS = ("last", "asum", "amean")


_OWN = {"param": ("params", "param"), "input": ("inputs", "input"), "lengths": ("inputs", "input")}


def _check_leaf(model, leaf, used_at: str) -> None:
    """Refuse a param or input node that ``model`` did not declare (one taken from another model)."""
    table, kind = _OWN[leaf.op]
    if getattr(model, table).get(leaf.name) is not leaf:
        raise GraphError(f"{kind} {leaf.name!r} is used at {used_at} in model {model.name!r}, but it was declared "
                         f"at {leaf.where} on another model; declare it on this one")


def _check_refs(model, roots):
    from rnnc.ir.graph import topo_order

    for n in roots:
        if n.op in _OWN:
            _check_leaf(model, n, n.where)
    for n in topo_order(roots):
        for i in n.inputs:
            if i.op in _OWN:
                _check_leaf(model, i, n.where)
        if n.op != "ref":
            continue
        name = n.attr("value")
        if name in model.signals:
            sig = model.signals[name]
            if sig.definition is None:
                raise GraphError(f"signal {name!r} (declared at {sig.where}) is read at {n.where} "
                                 f"but never defined")
            axes = sig.axes
        elif name in model.inputs:
            axes = model.inputs[name].axes
        else:
            raise GraphError(f"{name!r} is read at {n.where} but is not an input or signal of {model.name!r}")
        if set(n.axes) != set(axes):
            raise GraphError(f"{name!r} has axes ({', '.join(a.name for a in axes)}) but is indexed with "
                             f"({', '.join(a.name for a in n.axes)}) at {n.where}")


def _signal_def(sig):
    node = sig.definition
    for axis in sig.axes:
        if axis not in node.axes:
            node = spread(node, axis)
    return node if node.batched else to_batch(node)


def _attach(model, roots):
    """Give shifted references their initial values, and length-aware reductions their lengths."""
    lengths = {axis: model.inputs[name] for axis, name in model.lengths.items()}

    def init_of(node):
        if node.op == "ref" and node.attr("offset") and not node.inputs:
            init = model.initials.get(node.attr("value"))
            return (init,) if init is not None else ()
        return ()

    def fn(node, inputs, mapping):
        (init,) = init_of(node) or (None,)
        if init is not None:
            return make("ref", [mapping[init]], name=node.name, where=node.where, **dict(node.attrs))
        if node.op in _LENGTH_REDUCTIONS and node.attr("axis") in lengths and len(inputs) == 1:
            return make(node.op, [inputs[0], lengths[node.attr("axis")]], name=node.name,
                        where=node.where, **dict(node.attrs))
        return None

    return rebuild(roots, fn, extra=init_of)


def lower(model) -> Graph:
    """Check ``model`` and return its IR graph."""
    for name, sig in model.signals.items():
        if sig.definition is None:
            reads = ", ".join(sorted({r.where for r in sig.reads})) or "nowhere"
            raise GraphError(f"signal {name!r} (declared at {sig.where}) is never defined; it is read at {reads}")
    defs = {name: _signal_def(sig) for name, sig in model.signals.items()}
    roots = list(defs.values()) + list(model.outputs.values()) + list(model.loss_terms)
    roots += list(model.initials.values())
    _check_refs(model, roots)
    masks = {axis: step_mask(model.inputs[name], axis) for axis, name in model.lengths.items()}
    mapping = _attach(model, roots)
    values = {name: mapping[node] for name, node in defs.items()}
    values.update({name: node for name, node in model.inputs.items() if node.axes})
    draft = Graph(model.name, dict(model.inputs), dict(model.params), dict(model.param_inits), values,
                  tuple(defs), {k: mapping[v] for k, v in model.outputs.items()}, None,
                  inits={k: mapping[v] for k, v in model.initials.items()},
                  lengths={axis: model.inputs[name] for axis, name in model.lengths.items()})
    if masks:
        values = _hold_past_lengths(draft, masks)
    outputs = {k: _mask(mapping[v], masks, zero_fill=True) for k, v in model.outputs.items()}
    terms = [_mask(mapping[n], masks) for n in model.loss_terms]
    return dataclasses.replace(draft, values=values, outputs=outputs, loss=_total_loss(terms, masks))


def _hold_past_lengths(graph: Graph, masks) -> dict:
    from rnnc.schedule.deps import scan_of_signals

    values = dict(graph.values)
    for name, (axis, direction) in scan_of_signals(graph).items():
        if axis not in masks:
            continue
        node = values[name]
        carry = ref(name, node.axes, node.shape, node.dtype, True, axis, -direction,
                    init=graph.inits.get(name), where=node.where)
        values[name] = where(masks[axis], node, carry)
    return values


def _mask(node, masks, zero_fill=False):
    with at(node.where):
        for axis, mask in masks.items():
            if axis in node.axes:
                node = where(mask, node, 0.0) if zero_fill else node * mask
    return node


def _total_loss(terms, masks):
    """:math:`L = \\frac{1}{B} \\sum_b \\sum_{axes} \\ell` over every (already masked) term; its sums take the
    location of the term's ``m.loss(...)`` line."""
    total = None
    for term in terms:
        with at(term.where):
            for axis in term.axes:
                term = make("asum", [term], axis=axis)
            term = make("batch_mean", [term]) if term.batched else term
            total = term if total is None else total + term
    return total
