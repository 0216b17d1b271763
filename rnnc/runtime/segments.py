"""Checkpointed gradients in compiled code: ``rc.compile(m, checkpoint=k)``.

The sequence ``0 .. T-1`` along the loop axis ``t`` is cut into segments ``[s_j, e_j)`` of ``k`` steps (the last
one shorter when ``k`` does not divide ``T``). Compiled kernels of *segment models* do the work:

1. **forward**: from the state ``h[s_j - 1]`` entering a segment, run its ``k`` steps and return the state
   ``h[e_j - 1]`` leaving it. Run once over the whole sequence, keeping only these boundary states
   (``T / k`` of them).
2. **gradient**: for the segments in reverse, recompute the segment from its saved boundary state and
   back-propagate the segment loss

   .. math::  L_j' = \\sum_{u = s_j}^{e_j - 1} L_u + \\langle \\lambda_j, h[e_j - 1] \\rangle ,
              \\qquad \\lambda_j = \\frac{\\partial L}{\\partial h[e_j - 1]}\\Big|_{\\text{later segments}} ,

   whose gradient w.r.t. the params is the segment's share of :math:`\\partial L / \\partial \\theta`, and
   whose gradient w.r.t. the entering state is :math:`\\lambda_{j-1}` for the previous segment. Summed over
   segments this is exactly full BPTT (the chain rule split at the boundaries); the gradient model gives both,
   because the entering state is an ordinary axis-free input (the initial value of ``h[t-1]``). The term
   :math:`\\langle \\lambda_j, h[e_j - 1] \\rangle` is not in the segment model's loss:
   :math:`\\lambda_j`, another axis-free input, is the initial value of the reverse scan's read ``d_h_tm1[t+1]``
   (``gradient_graph(..., final=...)``), so no per-step array carries it and the kernel's loss is
   :math:`\\sum_u L_u` alone.

Truncated BPTT with ``k2 <= k1`` splits too: no gradient crosses a chunk boundary, so with segments made of
whole chunks (see :func:`segment_cuts` for a short last chunk) each segment is its own truncated gradient model
(:func:`rnnc.autodiff.truncate.truncated_gradient_graph`, chunks counted from the segment's start) and
:math:`\\lambda_j = 0`.

The adjoint entering state 0 is carried into the params of an initial value (``m.initial(h, h0)``) by the
interpreter, on the small axis-free graph of the initial values. The loss must split over segments: a sum of
per-step terms (what ``m.loss`` builds), plus terms that read only the last step (``h.last(t)``) or no step at
all, which go to the last segment. Peak memory is ``T / k`` boundary states plus one segment's buffers; the
forward pass runs twice. Models this plan does not fit (several loop axes, lengths, delays deeper than one step,
``truncate=(k1, k2)`` with ``k2 > k1``, gradients w.r.t. non-params) are refused with the reason
(:class:`Unsupported`), and :func:`rnnc.compile` falls back to the whole-sequence kernel with a warning.
"""
from __future__ import annotations

import math

import numpy as np

from rnnc.autodiff.grad import gradient_graph
from rnnc.autodiff.truncate import truncated_gradient_graph
from rnnc.interpret import interpret
from rnnc.interpret.bind import Binding, bind
from rnnc.interpret.evaluate import initial_fill
from rnnc.ir.graph import Graph, rebuild, topo_order
from rnnc.ir.names import fresh_name
from rnnc.ir.node import Node
from rnnc.ir.where import user_line
from rnnc.ops import ref
from rnnc.ops.leaves import leaf
from rnnc.ops.reduce import batch_mean, fsum
from rnnc.ops.registry import make
from rnnc.passes.dce import drop_unread_values, prune
from rnnc.runtime.compiled import _initial_values
from rnnc.runtime.kernel import Kernel

_WHOLE_AXIS = ("last", "first", "asum", "amean", "at_index", "edge_sum", "spread")


class Unsupported(Exception):
    """The model does not fit the segment plan; the message says why."""


class Plan:
    """The segment models of a forward graph (see the module docstring).

    Attributes
    ----------
    axis : Axis
        The loop axis cut into segments.
    states : list
        Names of the signals read one step back along ``axis`` (the state carried across a cut).
    state_inputs : dict
        Signal name -> the axis-free input that holds the state entering a segment.
    adjoint_inputs : dict
        Signal name -> the axis-free input :math:`\\lambda` (the adjoint of the leaving state), the initial value
        of the reverse scan's ``d_h_tm1[t+1]`` in ``middle``'s gradient model.
    forward : Graph
        Outputs: each delayed signal at the segment's last step.
    middle, end : Graph
        Segment models whose loss is the segment's per-step terms (:math:`L_j'` without the adjoint term, which
        :meth:`gradient` adds as an initial value); ``end`` (None when ``middle`` serves) adds the loss terms
        read only at the last step and has no adjoint inputs.
    """

    def __init__(self, graph: Graph, wrt=None, truncate=None):
        self.graph, self.axis = graph, _check(graph, wrt, truncate)
        self.truncate = None if truncate is None else (int(truncate[0]), int(truncate[1]))
        self.wrt = list(graph.params) if wrt is None else list(wrt)
        self.states = _states(graph, self.axis)
        taken = set(graph.inputs) | set(graph.params) | set(graph.values) | set(graph.outputs)
        self.state_inputs = {s: _leaf(graph.values[s], fresh_name(f"ckpt_{s}", taken)) for s in self.states}
        self.adjoint_inputs = {s: _leaf(graph.values[s], fresh_name(f"ckpt_adj_{s}", taken)) for s in self.states}
        steps, final = _loss_parts(graph, self.axis)
        self.forward = self._model("forward", [], outputs=True)
        self.middle = self._model("middle", steps)
        self.end = self._model("end", steps + final) if final else None

    def _model(self, label: str, parts: list, outputs: bool = False) -> Graph:
        g, axis = self.graph, self.axis
        roots = list(g.values.values()) + parts

        def swap(node, inputs, mapping):
            if node.op == "ref" and node.attr("axis") == axis and node.attr("value") in self.states:
                return ref(node.attr("value"), node.axes, node.shape, node.dtype, node.batched, axis,
                           node.attr("offset"), init=self.state_inputs[node.attr("value")], where=node.where)
            return None

        mapping = rebuild(roots, swap)
        values = {name: mapping[n] for name, n in g.values.items()}
        terms = [mapping[p] for p in parts]
        leaving = {s: make("last", [_read(g.values[s], s)], axis=axis) for s in self.states}
        loss = None
        for term in terms:
            loss = term if loss is None else loss + term
        seg = Graph(f"{g.name}_segment_{label}", {}, {}, {}, values, tuple(g.signals),
                    dict(leaving) if outputs else {}, loss)
        used = {n for n in seg.nodes if n.op in ("input", "lengths", "param")}
        named = {**g.inputs, **{v.name: v for v in self.state_inputs.values()}}
        return seg.replace(inputs={k: v for k, v in named.items() if v in used},
                           params={k: v for k, v in g.params.items() if v in used},
                           param_inits={k: v for k, v in g.param_inits.items() if g.params[k] in used})

    def gradient(self, model: Graph) -> Graph:
        """The gradient model of a segment model: w.r.t. its params in ``wrt`` and the entering states; for
        ``middle`` under full BPTT, with the adjoint inputs entering the leaving states."""
        wrt = [p for p in self.wrt if p in model.params] + [v.name for v in self.state_inputs.values()]
        if self.truncate is None:
            final = {s: (self.axis, lam) for s, lam in self.adjoint_inputs.items()} if model is self.middle else None
            return drop_unread_values(prune(gradient_graph(model, wrt, final), outputs=False))
        cut = (*self.truncate, self.axis)
        return drop_unread_values(prune(truncated_gradient_graph(model, wrt, cut), outputs=False))


def _check(graph: Graph, wrt, truncate):
    """The loop axis, after refusing what the plan does not cover."""
    if truncate is not None and (len(truncate) != 2 or int(truncate[1]) > int(truncate[0])):
        raise Unsupported(f"truncate={tuple(truncate)!r}: with k2 > k1 (or an axis given) gradients cross chunk "
                          "boundaries in several streams, which segments do not carry")
    if wrt is not None and set(wrt) - set(graph.params):
        raise Unsupported("gradients w.r.t. inputs or signals are per step; segments return params' gradients")
    axes = graph.axes()
    if len(axes) != 1 or graph.lengths:
        raise Unsupported(f"segments need one loop axis and no lengths; {graph.name!r} has axes "
                          f"{[a.name for a in axes]}" + (" and lengths" if graph.lengths else ""))
    if graph.loss is None:
        raise Unsupported(f"model {graph.name!r} has no loss")
    axis = axes[0]
    for r in graph.refs():
        if r.attr("axis") == axis and (r.attr("offset") != -1 or r.attr("value") not in graph.signals):
            raise Unsupported(f"{r.label()} at {r.where}: segments carry one step of signal state "
                              "(reads of the form h[t-1])")
    for n in topo_order(list(graph.values.values())):
        if n.op in _WHOLE_AXIS:
            raise Unsupported(f"{n.label()} ({n.op} at {n.where}) needs the whole axis inside a step")
    return axis


def _states(graph: Graph, axis) -> list:
    return sorted({r.attr("value") for r in graph.refs() if r.attr("axis") == axis})


def _loss_parts(graph: Graph, axis) -> tuple[list, list]:
    """The loss's ``+`` terms: per-step sums (every segment has its share) and final terms (last segment)."""
    parts, stack = [], [graph.loss]
    while stack:
        n = stack.pop()
        if n.op == "add" and not n.axes and not n.batched:
            stack.extend(reversed(n.inputs))
        else:
            parts.append(n)
    steps, final = [], []
    for part in parts:
        inner = part.inputs[0] if part.op == "batch_mean" else part
        if inner.op == "asum" and inner.attr("axis") == axis and not _whole(inner.inputs[0]):
            steps.append(part)
        elif not _whole(part, allowed=("last",)):
            final.append(part)
        else:
            bad = _whole(part, allowed=("last",))
            raise Unsupported(f"the loss reads {bad.label()} ({bad.op} at {bad.where}), which does not split "
                              "into segments: per-step terms and terms of the last step do")
    return steps, final


def _whole(node: Node, allowed=()):
    return next((n for n in topo_order([node]) if n.op in _WHOLE_AXIS and n.op not in allowed), None)


def _leaf(value: Node, name: str) -> Node:
    return leaf("input", name, value.shape, "float", (), value.batched, where=value.where)


def _read(value: Node, name: str) -> Node:
    return ref(name, value.axes, value.shape, value.dtype, value.batched, None, 0, where=value.where)


def segment_length(checkpoint, steps: int) -> int:
    """Steps per segment: ``checkpoint`` itself, or :math:`\\lceil\\sqrt{T}\\rceil` for ``checkpoint=True``."""
    if checkpoint is True:
        return max(1, math.isqrt(steps - 1) + 1) if steps > 1 else 1
    return int(checkpoint)


class Segmented:
    """``loss_and_grad`` of a :class:`~rnnc.runtime.compiled.Compiled` model by segments (module docstring).

    Its kernels live in the compiled object's kernel table as ``"segment_forward"``, ``"segment_grad"`` and
    ``"segment_grad_end"``.
    """

    def __init__(self, compiled, plan: Plan, checkpoint):
        self.compiled, self.plan, self.checkpoint = compiled, plan, checkpoint

    def kernel(self, variant: str):
        table = self.compiled._kernels
        if variant not in table:
            p = self.plan
            graph = {"segment_forward": lambda: prune(p.forward, loss=False, grads=False),
                     "segment_grad": lambda: p.gradient(p.middle),
                     "segment_grad_end": lambda: p.gradient(p.end)}[variant]()
            table[variant] = Kernel(graph, self.compiled.dtype, passes=self.compiled.passes,
                                    threads=self.compiled.threads)
        return table[variant]

    def loss_and_grad(self, inputs: dict, params: dict, sizes: dict | None = None, batch: int | None = None,
                      check_finite: bool | str = False) -> tuple[float, dict]:
        """:math:`L` and :math:`\\partial L / \\partial w`, equal to the whole-sequence kernel's up to rounding."""
        p = self.plan
        whole = bind(p.graph, inputs, params, self.compiled.dtype, sizes, batch, check_finite=check_finite)
        steps, nbatch, dtype = whole.sizes[p.axis], whole.batch, whole.dtype
        cuts = segment_cuts(steps, segment_length(self.checkpoint, steps), p.truncate)
        enter = self._boundaries(whole, cuts, self._initial(inputs, params, nbatch, dtype))
        adjoint = {s: np.zeros_like(v) for s, v in enter[0].items()}
        total, grads = 0.0, {}
        for j in reversed(range(len(cuts))):
            end = j == len(cuts) - 1 and p.end is not None
            variant = "segment_grad_end" if end else "segment_grad"
            k = self.kernel(variant)
            lam = {} if end or p.truncate is not None else adjoint
            bufs = self._call(variant, k, whole, enter[j], lam, *cuts[j])
            if k.source_graph.loss is not None:        # a middle segment of a loss read at the last step only
                total += float(k.result(bufs, "loss"))
            for name in k.source_graph.grads:
                if name in p.graph.params:
                    part = k.result(bufs, "grads", name)
                    grads[name] = grads[name] + part if name in grads else part
            adjoint = {s: k.result(bufs, "grads", p.state_inputs[s].name) for s in p.states}
            if p.truncate is not None and j > 0:     # nothing flows back across a chunk boundary
                adjoint = {s: np.zeros_like(a) for s, a in adjoint.items()}
        grads = self._through_initial_values(grads, adjoint, inputs, params, nbatch, dtype)
        return total, {name: grads.get(name, np.zeros(p.graph.params[name].shape, dtype)) for name in p.wrt}

    def _boundaries(self, whole, cuts, initial: dict) -> list:
        """The state entering each segment: the forward kernel run segment after segment from ``initial``."""
        enter = [initial]
        if len(cuts) == 1:
            return enter
        fwd = self.kernel("segment_forward")
        for start, stop in cuts[:-1]:
            bufs = self._call("segment_forward", fwd, whole, enter[-1], {}, start, stop)
            enter.append({s: fwd.result(bufs, "outputs", s) for s in self.plan.states})
        fwd._buffers.clear()          # its work buffers are not needed while the gradient kernel runs
        return enter

    def _call(self, variant, k, whole, enter, lam, start, stop):
        """Run kernel ``k`` on steps ``[start, stop)``: the whole call's checked arrays, sliced (views), and the
        segment's state and adjoint inputs."""
        p, graph = self.plan, k.source_graph
        arrays = {node: (arr[start:stop] if p.axis in node.axes else arr) for node, arr in whole.arrays.items()
                  if node.op == "param" or node in graph.inputs.values()}
        arrays.update({p.state_inputs[s]: v for s, v in enter.items()})
        arrays.update({p.adjoint_inputs[s]: v for s, v in lam.items()})
        bufs = k.call(Binding(arrays, {p.axis: stop - start}, whole.batch, whole.dtype))
        self.compiled._report(variant, k)
        return bufs

    def _initial(self, inputs: dict, params: dict, nbatch: int, dtype) -> dict:
        """The state entering step 0: each delayed signal's initial value (zeros unless ``m.initial``)."""
        g = self.plan.graph
        inits = {s: g.inits[s] for s in self.plan.states if s in g.inits}
        values = _initial_values(g, inits, inputs, params, nbatch, dtype) if inits else {}
        out = {}
        for s in self.plan.states:
            value = g.values[s]
            r = next(r for r in g.refs() if r.attr("value") == s and r.attr("axis") == self.plan.axis)
            fill = initial_fill(r, values.get(s), value, (), {}, nbatch, dtype)
            shape = ((nbatch,) if value.batched else ()) + value.shape
            out[s] = np.ascontiguousarray(np.broadcast_to(fill, shape), dtype=dtype)
        return out

    def _through_initial_values(self, grads, adjoint, inputs, params, nbatch, dtype) -> dict:
        """Add the params' share through initial values: the VJP of ``h0 = init(params)`` with the adjoint
        entering step 0, by the interpreter on the axis-free graph :math:`\\langle\\lambda_0, h_0\\rangle`."""
        g, p = self.plan.graph, self.plan
        inits = {s: g.inits[s] for s in p.states if s in g.inits}
        used = {n for n in topo_order(list(inits.values())) if n.op == "param"}
        wrt = [name for name in p.wrt if g.params[name] in used]
        if not wrt:
            return grads
        loss = None
        for s, node in inits.items():
            term = batch_mean(fsum(p.adjoint_inputs[s] * node))
            loss = term if loss is None else loss + term
        leaves = {n for n in topo_order([loss]) if n.op in ("input", "param")}
        sub = Graph(f"{g.name}_initial_values", {}, {}, {}, {}, (), {}, loss)
        sub = sub.replace(inputs={n.name: n for n in leaves if n.op == "input"},
                          params={k: v for k, v in g.params.items() if v in leaves},
                          param_inits={k: v for k, v in g.param_inits.items() if g.params[k] in leaves})
        feed = {k: v for k, v in inputs.items() if k in sub.inputs}
        feed.update({p.adjoint_inputs[s].name: adjoint[s] * (nbatch if g.values[s].batched else 1) for s in inits})
        res = interpret(gradient_graph(sub, wrt), feed, {k: params[k] for k in sub.params}, dtype=dtype,
                        batch=nbatch)
        for name in wrt:
            extra = np.asarray(res.grads[name], dtype)
            grads[name] = grads[name] + extra if name in grads else extra
        return grads


def segment_cuts(steps: int, every: int, truncate=None) -> list:
    """The segments ``[(start, stop), ...]`` of ``every`` steps covering ``0 .. steps - 1``.

    With ``truncate=(k1, k2)`` (``k2 <= k1``) segments are whole chunks of ``k1`` steps (``every`` rounded up to
    a multiple of ``k1``), and a last segment shorter than ``k2`` — a short last chunk, whose gradient reaches
    ``k2`` steps back into the chunk before it — takes that chunk from the segment before, so that no gradient
    crosses a cut.
    """
    if truncate is not None:
        k1, k2 = truncate
        every = -(-every // k1) * k1
    cuts = [(s, min(s + every, steps)) for s in range(0, steps, every)]
    if truncate is not None and len(cuts) > 1 and cuts[-1][1] - cuts[-1][0] < k2:
        (a, b), (_, end) = cuts[-2], cuts[-1]
        cuts[-2:] = ([(a, b - k1)] if b - k1 > a else []) + [(b - k1, end)]
    return cuts


def segmented(compiled, options: dict) -> tuple[Segmented | None, str | None]:
    """``(Segmented, None)`` when ``compiled``'s model fits the segment plan, else ``(None, reason)``."""
    checkpoint = options["checkpoint"]
    if checkpoint is not True and (isinstance(checkpoint, bool) or int(checkpoint) < 1):
        raise ValueError(f"checkpoint must be a positive number of steps or True, got {checkpoint!r} at {user_line()}")
    try:
        plan = Plan(compiled.graph, options.get("wrt"), options.get("truncate"))
    except Unsupported as why:
        return None, str(why)
    return Segmented(compiled, plan, checkpoint), None
