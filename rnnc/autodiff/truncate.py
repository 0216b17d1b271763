"""Truncated BPTT as a gradient graph.

Semantics (``truncate=(k1, k2)`` along the loop axis ``t``; chunk ``c`` holds steps ``[c k1, min((c+1) k1, T))``
and ends at ``e_c``): the returned gradient is

.. math::  \\sum_c \\frac{\\partial}{\\partial \\theta} \\Big( \\sum_{u \\in c} L_u \\Big)\\Big|_{\\text{back to } s_c},
           \\qquad s_c = e_c - k_2 + 1,

i.e. each chunk's losses are back-propagated through at most ``k2`` steps ending at the chunk's last step: the
state entering step ``s_c`` receives gradient but is treated as a constant (so an initial value, the state
entering step 0, is trained when ``s_c <= 0``). The forward pass is unchanged: state carries across chunks.
``k1 = k2 = T`` is full BPTT; losses of a chunk that lie before ``s_c`` (possible when ``k2 < k1``) contribute
nothing. Summing the chunk gradients is
what a trainer applying one update per sequence sees; the lecture's update-per-chunk is ``k1`` updates.

Because gradients from different chunks stop at different steps, the adjoint is carried in ``M`` streams:
stream ``l`` at step ``u`` holds what originated in chunk ``chunk(u) + l``. Crossing a chunk boundary moves
it to the next stream; a constant 0/1 mask per step (op ``tbptt_mask``) applies the cuts. No new rule: the
streams are ordinary adjoint signals and the schedule finds reverse scans as usual.
"""
from __future__ import annotations

from rnnc.autodiff.grad import _check_wrt, _relevant, adjoint_equations, collect_grads, sweep
from rnnc.errors import GraphError
from rnnc.ir.graph import Graph
from rnnc.ir.names import fresh_name
from rnnc.ir.node import Axis
from rnnc.ops.leaves import tbptt_mask


class _Hooks:
    def __init__(self, axis, k1, k2, stream):
        self.axis, self.k1, self.k2, self.stream = axis, k1, k2, stream

    def seed(self, node, inp):
        if self.stream == 0 and self.axis in inp.axes and self.axis not in node.axes:
            return tbptt_mask(self.axis, self.k1, self.k2, mode="seed")
        return None

    def init(self, r):
        if r.attr("axis") != self.axis:
            return None
        return tbptt_mask(self.axis, self.k1, self.k2, -r.attr("offset"), self.stream, 0, "init")


def _truncation_axis(graph: Graph, axis) -> Axis:
    if isinstance(axis, Axis):
        return axis
    for a in graph.axes():
        if a.name == (axis or "t"):
            return a
    raise GraphError(f"truncate: model {graph.name!r} has no axis {axis or 't'!r}")


def truncated_gradient_graph(graph: Graph, wrt, truncate) -> Graph:
    """The gradient model of truncated BPTT ``truncate = (k1, k2[, axis])``."""
    k1, k2, *rest = truncate
    k1, k2 = int(k1), int(k2)
    if k1 < 1 or k2 < 1:
        raise ValueError(f"truncate=(k1, k2) needs positive step counts, got {truncate!r}")
    axis = _truncation_axis(graph, rest[0] if rest else None)
    for r in graph.refs():
        if r.attr("axis") == axis and r.attr("offset") > 0:
            raise GraphError(f"truncated BPTT along {axis.name} needs forward recurrences only; "
                             f"{r.label()} at {r.where} reads ahead")
    wrt = list(graph.params) if wrt is None else list(wrt)
    _check_wrt(graph, wrt)
    streams = (k2 - 2 + k1) // k1 + 1
    relevant = _relevant(graph)
    taken = set(graph.values) | set(graph.inputs) | set(graph.params) | set(graph.outputs)
    names = [{v: fresh_name(f"d_{v}" + (f"_s{s}" if s else ""), taken) for v, n in graph.values.items()
              if n in relevant and (v in graph.signals or v in wrt)} for s in range(streams)]
    sweeps = [sweep(graph, names[s], relevant, seed=(s == 0), hooks=_Hooks(axis, k1, k2, s))
              for s in range(streams)]
    values = {}
    for dst in range(streams):
        values.update(adjoint_equations(graph, names, sweeps, dst, taken, cut=(axis, k1, k2)))
    grads = collect_grads(graph, wrt, names, sweeps, values)
    return Graph(f"{graph.name}_grad", dict(graph.inputs), dict(graph.params), dict(graph.param_inits),
                 {**graph.values, **values}, tuple(graph.signals) + tuple(values), dict(graph.outputs),
                 graph.loss, grads, dict(graph.lengths), dict(graph.inits),
                 {"forward": graph, "adjoints": dict(names[0]), "wrt": tuple(wrt), "truncate": (k1, k2),
                  "streams": streams})
