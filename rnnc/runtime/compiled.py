"""``rc.compile``: a model compiled to Numba kernels, with ``forward``, ``loss_and_grad`` and ``step``.

Each entry point is one kernel (see :class:`rnnc.runtime.kernel.Kernel`), built on first use:

* ``forward`` without targets: outputs only; with every input the loss needs: outputs and loss;
* ``loss_and_grad``: the gradient graph of :func:`rnnc.grad` (forward + adjoint scans + parameter sums);
* ``step``: the forward graph run one index at a time, with shifted reads before the step served from a
  history the caller carries in ``state``.
"""
from __future__ import annotations

import sys
import weakref

import numpy as np

from rnnc.errors import GraphError
from rnnc.interpret.boundary import check_finite as check_finite_arrays
from rnnc.interpret.boundary import check_state, positive_int, state_batch
from rnnc.interpret.evaluate import initial_fill
from rnnc.interpret.rolled import Result, _loss_only_inputs
from rnnc.ir.graph import Graph
from rnnc.passes.dce import drop_unread_values, needed, prune
from rnnc.runtime.kernel import Kernel

_WHOLE_AXIS = ("last", "first", "asum", "amean", "at_index", "edge_sum", "spread")


class Compiled:
    """A compiled model. ``f.forward(inputs, params)``, ``f.loss_and_grad(inputs, params)``; for streaming
    ``f.initial_state(batch)`` and ``outputs, state = f.step(inputs_t, state, params)``; with ``feedback``
    ``f.generate(params, prime, steps)``. ``f.source`` is the generated module, ``f.stats`` timings."""

    def __init__(self, model, dtype: str = "float32", passes=None, threads: int | None = None,
                 verbose: bool = False, feedback: dict | None = None, **grad_options):
        self.threads, self.verbose, self._reported = threads, verbose, set()
        self.model = model
        self.graph: Graph = model if isinstance(model, Graph) else model.graph
        if np.dtype(dtype) not in (np.dtype("float32"), np.dtype("float64")):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = str(np.dtype(dtype))
        self.grad_options = grad_options
        self.passes = passes
        self._kernels: dict = {}
        self.segments = None       # checkpoint=k on the CPU: rnnc.runtime.segments.Segmented (set by compile)
        self._step_sizes = None
        self._optional = _loss_only_inputs(self.graph)
        self.feedback = None
        if feedback is not None:             # checked now, so a wrong name fails at compile, not at generate
            from rnnc.runtime.generate import feedback_of

            self.feedback = feedback_of(self.graph, feedback)

    # ------------------------------------------------------------------ kernels
    def kernel(self, variant: str) -> Kernel:
        """The kernel of ``variant`` ("outputs", "loss", "grad" or "step"), built on first use."""
        if variant not in self._kernels:
            self._kernels[variant] = Kernel(self._graph_of(variant), self.dtype, stream=variant == "step",
                                            passes=self.passes, threads=self.threads)
        return self._kernels[variant]

    def _report(self, variant: str, k: Kernel) -> None:
        """With ``verbose``: after a kernel's first call, say what was compiled and what came from the cache."""
        if not self.verbose or variant in self._reported:
            return
        self._reported.add(variant)
        module = "module loaded from the cache" if k.stats["cache_hit"] else "module generated"
        done = k.stats.get("precompile", {})
        where = f", {done['jobs']} functions on {done['workers']} processes" if done.get("workers", 1) > 1 else ""
        print(f"rc.compile: {self.graph.name!r} {variant} kernel: {module} in {k.stats['render_s']:.2f} s "
              f"({k.path}); first call, Numba's compile or cache load included, {k.stats['compile_s']:.2f} s{where}",
              file=sys.stderr, flush=True)

    def _graph_of(self, variant: str) -> Graph:
        g = self.graph
        if variant == "outputs":
            return prune(g, loss=False, grads=False)
        if variant == "loss":
            return prune(g, grads=False)
        if variant == "grad":
            from rnnc.autodiff.api import grad

            gg = grad(self.model, **self.grad_options).graph
            return drop_unread_values(prune(gg, outputs=False))     # loss_and_grad returns loss and grads only
        if variant == "step":         # outputs that need the whole axis (h.last(t)) are left out
            return _streamable(prune(g, loss=False, grads=False))
        raise ValueError(f"unknown kernel variant {variant!r}")

    @property
    def source(self) -> str:
        """The generated module of the forward kernel (``f.kernel('grad').source`` for the gradient)."""
        return self.kernel("loss" if self.graph.loss is not None else "outputs").source

    @property
    def stats(self) -> dict:
        return {name: dict(k.stats) for name, k in self._kernels.items()}

    # ------------------------------------------------------------------ entry points
    def forward(self, inputs: dict, params: dict, sizes: dict | None = None, batch: int | None = None,
                check_finite: bool | str = False) -> Result:
        """Outputs by name, and the loss when every input the loss needs is given.

        ``sizes`` (axis name -> size) and ``batch`` size axes no input varies along (an autonomous model);
        ``check_finite`` refuses NaN / Inf in the float inputs and params (``"params"``: the params only).
        Inputs are checked as ``rc.interpret`` checks them (:mod:`rnnc.interpret.boundary`) before the kernel
        runs.
        """
        has_targets = self.graph.loss is not None and all(n in inputs for n in self._optional)
        k = self.kernel("loss" if has_targets else "outputs")
        b = k.bind(inputs, params, optional=self._optional, sizes=sizes, batch=batch, check_finite=check_finite)
        bufs = k.call(b)
        self._report("loss" if has_targets else "outputs", k)
        outs = {name: k.result(bufs, "outputs", name) for name in k.source_graph.outputs}
        loss = float(k.result(bufs, "loss")) if has_targets else None
        return Result(outs, loss)

    def loss_and_grad(self, inputs: dict, params: dict, sizes: dict | None = None, batch: int | None = None,
                      check_finite: bool | str = False) -> tuple[float, dict]:
        """:math:`L` and :math:`\\partial L / \\partial w` for every param (or the ``wrt`` names); ``sizes``,
        ``batch`` and ``check_finite`` as in :meth:`forward`."""
        if self.segments is not None:
            return self.segments.loss_and_grad(inputs, params, sizes, batch, check_finite)
        k = self.kernel("grad")
        b = k.bind(inputs, params, sizes=sizes, batch=batch, check_finite=check_finite)
        bufs = k.call(b)
        self._report("grad", k)
        grads = {name: k.result(bufs, "grads", name) for name in k.source_graph.grads}
        return float(k.result(bufs, "loss")), grads

    def initial_state(self, batch: int | None = None, params: dict | None = None,
                      inputs: dict | None = None) -> dict:
        """The state before the first step, for :meth:`step`: for each delayed value ``s``, its last ``depth``
        steps ``(depth, B, *shape)`` as the model's delays see them before index 0, i.e. its initial value
        (zeros unless ``m.initial`` sets one) repeated ``depth`` times.

        An initial value read from params or from axis-free inputs (``m.initial(h, m.input("h0", n, axes=()))``)
        is computed from ``params`` / ``inputs``, which it then needs; ``batch`` defaults to the inputs' batch,
        else 1. ``step(x, initial_state(B, params, inputs), params)`` equals ``step(x, None, params)`` with
        those inputs.
        """
        return initial_histories(self.kernel("step"), batch, params, inputs)

    def step(self, inputs_t: dict, state, params: dict, batch: int | None = None,
             check_finite: bool | str = False) -> tuple[dict, dict]:
        """One step of every forward recurrence: ``outputs, state = f.step(inputs_t, state, params)``.

        ``inputs_t`` holds each sequence input at one index, laid out ``(B, *shape)``, and any axis-free input
        the step reads; ``state`` is :meth:`initial_state` (or None: initial values read from ``inputs_t``)
        at the start, then what the previous call returned: for each delayed value, its last ``depth`` steps
        ``(depth, B, *shape)`` (checked against the model's delays, batch and feature sizes). An axis-free
        input that only sets an initial value is not needed once a state is given. ``batch`` sizes the first
        step of a model without inputs (later steps take it from the state). Outputs that need the whole axis
        (``h.last(t)``) are not computed by a step. Streaming ``T`` steps equals :meth:`forward` over ``T``:

        .. code-block:: python

            state = f.initial_state(B)
            for k in range(T):
                out, state = f.step({"x": x[k]}, state, params)      # out["y"] == forward(...)["y"][k]
        """
        k = self.kernel("step")
        g = k.source_graph
        if inputs_t is None or (isinstance(inputs_t, dict) and inputs_t and set(inputs_t) <= set(k.layout.hist)
                                and not set(inputs_t) & set(g.inputs)):
            raise TypeError("step(inputs_t, state, params) takes the step's inputs first and returns "
                            "(outputs, state); this call looks like the old step(state, inputs_t, params)")
        seq = {name: np.asarray(v)[None] if name in g.inputs and g.inputs[name].axes else v
               for name, v in inputs_t.items()}
        if batch is None and not seq:
            batch = state_batch(state)
        if state is not None:
            seq.update(_placeholders(g, seq, batch or state_batch(state) or 1, k.dtype))
        if self._step_sizes is None:          # one index of the loop axis (Graph.axes() walks every node)
            self._step_sizes = {a.name: 1 for a in g.axes()}
        b = k.bind(seq, params, sizes=self._step_sizes, batch=batch, check_finite=check_finite)
        expected = _history_shapes(k, b.batch)
        hists = check_state(state, expected, k.dtype)
        if check_finite:
            check_finite_arrays(hists, "step(): state ")
        extra = {}
        for name, (hvar, svar, _depth) in k.layout.hist.items():
            extra[hvar] = hists[name] if state is not None else np.zeros(expected[name], k.dtype)
            extra[svar] = 1 if state is not None else 0
        bufs = k.call(b, extra)
        self._report("step", k)
        new_state = {}
        for name, (hvar, _svar, depth) in k.layout.hist.items():
            node = g.values[name]
            now = k.result(bufs, "values", name) if node.op not in ("input",) else b.arrays[node]
            new_state[name] = np.concatenate([extra[hvar], now], axis=0)[-depth:]
        outs = {name: k.result(bufs, "outputs", name)[0] for name in g.outputs}
        return outs, new_state

    def generate(self, params: dict, prime, steps: int, temperature: float = 1.0, top_k: int | None = None,
                 seed=None, inputs: dict | None = None) -> np.ndarray:
        """Feed ``prime``, then ``steps`` tokens drawn from the ``feedback`` output, each fed back as the next
        input, through the compiled :meth:`step`; see :func:`rnnc.runtime.generate.generate`."""
        from rnnc.runtime.generate import StepRunner, run

        if self.feedback is None:
            raise GraphError("generate() needs to know which output feeds which input: "
                             "rc.compile(m, feedback={'x': 'logits'}) (input name -> output name)")
        return run(StepRunner(self, params, self.feedback, inputs), prime, steps, self.feedback, temperature,
                   top_k, seed)


def _history_shapes(k: Kernel, batch: int) -> dict:
    """Delayed value name -> the layout ``(depth, [B], *shape)`` of its history in a step state."""
    g = k.source_graph
    out = {}
    for name, (_hvar, _svar, depth) in k.layout.hist.items():
        value = g.values[name]
        out[name] = (depth,) + ((batch,) if value.batched else ()) + value.shape
    return out


_INIT_ONLY: weakref.WeakKeyDictionary[Graph, frozenset] = weakref.WeakKeyDictionary()


def init_only_inputs(graph: Graph) -> frozenset:
    """Names of the inputs a step reads only to compute initial values (not needed once a state is given)."""
    if graph not in _INIT_ONLY:
        _INIT_ONLY[graph] = _init_only(graph)
    return _INIT_ONLY[graph]


def _init_only(graph: Graph) -> frozenset:
    def read(n):    # through references to the values they read, but not into their initial values
        v = graph.values.get(n.attr("value")) if n.op == "ref" else None
        return (v,) if v is not None else ()

    roots = list(graph.outputs.values()) + [graph.values[s] for s in graph.signals]
    stack, seen = list(roots), set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(read(n) + (() if n.op == "ref" else tuple(n.inputs)))
    used = {n.name for n in graph.nodes if n.op == "input"}
    return frozenset(name for name in used if graph.inputs[name] not in seen)


def _placeholders(graph: Graph, given: dict, batch: int, dtype) -> dict:
    """Zeros for the init-only inputs a stepped call was not given (the kernel computes but never reads them)."""
    out = {}
    for name in init_only_inputs(graph) - set(given):
        node = graph.inputs[name]
        out[name] = np.zeros((batch,) + node.shape,
                             np.int64 if node.dtype == "int" else dtype)
    return out


def initial_histories(k: Kernel, batch: int | None, params: dict | None, inputs: dict | None) -> dict:
    """:meth:`Compiled.initial_state` for the step kernel ``k``: the initial values are computed by the
    interpreter, from a graph whose outputs are the ``m.initial`` values of the delayed signals."""
    g = k.source_graph
    inputs = dict(inputs or {})
    unknown = sorted(set(inputs) - set(g.inputs))
    if unknown:
        raise ValueError(f"initial_state(): model {g.name!r} has no input named {', '.join(map(repr, unknown))}")
    if batch is not None:
        batch = positive_int(batch, "batch=")
    for name, arr in inputs.items():
        if g.inputs[name].batched and np.ndim(arr) > len(g.inputs[name].axes):
            batch = batch or int(np.shape(arr)[len(g.inputs[name].axes)])
    batch = batch or 1
    inits = {name: g.inits[name] for name in k.layout.hist if name in g.inits}
    values = _initial_values(g, inits, inputs, params or {}, batch, k.dtype) if inits else {}
    out = {}
    for name, shape in _history_shapes(k, batch).items():
        refs = [r for r in g.refs() if r.attr("value") == name and r.attr("offset") < 0]
        ref = next((r for r in refs if r.inputs), refs[0])
        fill = initial_fill(ref, values.get(name), g.values[name], (), {}, batch, k.dtype)
        out[name] = np.ascontiguousarray(np.broadcast_to(fill, shape), dtype=k.dtype)
    return out


def _initial_values(g: Graph, inits: dict, inputs: dict, params: dict, batch: int, dtype) -> dict:
    """Signal name -> its initial value, laid out ``([B], *shape)``, computed by :func:`rnnc.interpret`."""
    from rnnc.interpret import interpret

    sub = Graph(f"{g.name} initial values", {}, {}, {}, {}, (), dict(inits), None)
    leaves = {n for n in sub.nodes if n.op in ("input", "param")}
    sub = sub.replace(inputs={k: v for k, v in g.inputs.items() if v in leaves},
                      params={k: v for k, v in g.params.items() if v in leaves},
                      param_inits={k: v for k, v in g.param_inits.items() if g.params[k] in leaves})
    res = interpret(sub, {k: v for k, v in inputs.items() if k in sub.inputs},
                    {k: v for k, v in params.items() if k in sub.params}, dtype=dtype, batch=batch)
    return res.outputs


def _streamable(graph: Graph) -> Graph:
    """``graph`` without the outputs a step cannot compute (those that need the whole axis, such as
    ``h.last(t)``, or read a later step); refused when no output is left or a kept value needs one."""
    keep = {name: node for name, node in graph.outputs.items() if _whole_axis(needed(graph, [node])) is None}
    if graph.outputs and not keep:
        _refuse(_whole_axis(graph.nodes))
    if len(keep) < len(graph.outputs):
        graph = prune(graph.replace(outputs=keep), loss=False, grads=False)
    axes = graph.axes()
    if len(axes) != 1 or graph.lengths:
        raise GraphError(f"step() runs models with one loop axis and no lengths; {graph.name!r} has axes "
                         f"{[a.name for a in axes]}" + (" and lengths" if graph.lengths else ""))
    _refuse(_whole_axis(graph.nodes))
    return graph


def _whole_axis(nodes):
    """The first node of ``nodes`` a step cannot compute, or None."""
    return next((n for n in nodes if n.op in _WHOLE_AXIS or (n.op == "ref" and n.attr("offset") > 0)), None)


def _refuse(node) -> None:
    if node is None:
        return
    if node.op == "ref":
        raise GraphError(f"step() cannot run {node.label()} at {node.where}: it reads a later step")
    raise GraphError(f"step() cannot run {node.label()} ({node.op} at {node.where}): it needs the whole axis")
