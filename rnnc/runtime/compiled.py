"""``rc.compile``: a model compiled to Numba kernels, with ``forward``, ``loss_and_grad`` and ``step``.

Each entry point is one kernel (see :class:`rnnc.runtime.kernel.Kernel`), built on first use:

* ``forward`` without targets: outputs only; with every input the loss needs: outputs and loss;
* ``loss_and_grad``: the gradient graph of :func:`rnnc.grad` (forward + adjoint scans + parameter sums);
* ``step``: the forward graph run one index at a time, with shifted reads before the step served from a
  history the caller carries in ``state``.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

from rnnc.errors import GraphError
from rnnc.interpret.boundary import check_finite as check_finite_arrays
from rnnc.interpret.boundary import check_state, state_batch
from rnnc.interpret.rolled import Result, _loss_only_inputs
from rnnc.ir.graph import Graph
from rnnc.passes.dce import prune
from rnnc.runtime.kernel import Kernel

_WHOLE_AXIS = ("last", "first", "asum", "amean", "at_index", "edge_sum", "spread")


class Compiled:
    """A compiled model. ``f.forward(inputs, params)``, ``f.loss_and_grad(inputs, params)``,
    ``f.step(state, inputs_t, params)``; ``f.source`` is the generated module, ``f.stats`` timings."""

    def __init__(self, model, dtype: str = "float32", passes=None, threads: int | None = None,
                 verbose: bool = False, **grad_options):
        self.threads, self.verbose, self._reported = threads, verbose, set()
        self.model = model
        self.graph: Graph = model if isinstance(model, Graph) else model.graph
        if np.dtype(dtype) not in (np.dtype("float32"), np.dtype("float64")):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = str(np.dtype(dtype))
        self.grad_options = grad_options
        self.passes = passes
        self._kernels: dict = {}
        self._optional = _loss_only_inputs(self.graph)

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
        print(f"rc.compile: {self.graph.name!r} {variant} kernel: {module} in {k.stats['render_s']:.2f} s "
              f"({k.path}); first call, Numba's compile or cache load included, {k.stats['compile_s']:.2f} s",
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
            return prune(gg, outputs=False)
        if variant == "step":
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
        k = self.kernel("grad")
        b = k.bind(inputs, params, sizes=sizes, batch=batch, check_finite=check_finite)
        bufs = k.call(b)
        self._report("grad", k)
        grads = {name: k.result(bufs, "grads", name) for name in k.source_graph.grads}
        return float(k.result(bufs, "loss")), grads

    def step(self, state, inputs_t: dict, params: dict, batch: int | None = None, check_finite: bool | str = False):
        """One step of every forward recurrence: ``(state, outputs at this step)``.

        ``inputs_t`` holds each sequence input at one index, laid out ``(B, *shape)``; ``state`` is None
        at the start, then what the previous call returned: for each delayed value, its last ``depth`` steps
        ``(depth, B, *shape)`` (checked against the model's delays, batch and feature sizes). ``batch`` sizes
        the first step of a model without inputs (later steps take it from the state).
        """
        k = self.kernel("step")
        g = k.source_graph
        seq = {name: np.asarray(v)[None] if name in g.inputs and g.inputs[name].axes else v
               for name, v in inputs_t.items()}
        if batch is None and not seq:
            batch = state_batch(state)
        b = k.bind(seq, params, sizes={a.name: 1 for a in g.axes()}, batch=batch, check_finite=check_finite)
        expected = {}
        for name, (_hvar, _svar, depth) in k.layout.hist.items():
            value = g.values[name]
            expected[name] = (depth,) + ((b.batch,) if value.batched else ()) + value.shape
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
        return new_state, outs


def _streamable(graph: Graph) -> Graph:
    axes = graph.axes()
    if len(axes) != 1 or graph.lengths:
        raise GraphError(f"step() runs models with one loop axis and no lengths; {graph.name!r} has axes "
                         f"{[a.name for a in axes]}" + (" and lengths" if graph.lengths else ""))
    for n in graph.nodes:
        if n.op in _WHOLE_AXIS:
            raise GraphError(f"step() cannot run {n.label()} ({n.op} at {n.where}): it needs the whole axis")
        if n.op == "ref" and n.attr("offset") > 0:
            raise GraphError(f"step() cannot run {n.label()} at {n.where}: it reads a later step")
    return graph


def compile(model, target: str = "cpu", dtype: str = "float32", threads: int | None = None,
            verbose: bool = False, **grad_options) -> Compiled:  # noqa: A001
    """Compile ``model`` for ``target`` ("cpu"): ``f = rc.compile(m)``; see :class:`Compiled`.

    ``threads``: how many threads a call may use (default: ``NUMBA_NUM_THREADS``, the CPU count unless set).
    A row-local scan (every Elman, LSTM, GRU, bidirectional or ReNet scan) runs as that many blocks of batch
    rows, each a whole time loop on its own thread; products over all steps × batch run as row blocks too; with
    one BLAS thread in every stage. A module with parallel image kernels runs those on that many Numba threads
    (and its scans whole). A module with neither uses BLAS threads per stage: 2 for map stages, for a scan's
    per-step products 1 on batches up to 32, else 2 (``threads`` fixes both). See ``docs/backends.md``.
    ``grad_options`` (``wrt``, ``truncate``, ``checkpoint``) are passed to :func:`rnnc.grad` for
    ``loss_and_grad``. With ``checkpoint=k`` the compiled gradients equal the checkpointed ones, but the
    compiled kernel still keeps every step's values: the memory saving is the interpreter's only (for now), and
    ``compile`` says so with a ``RuntimeWarning``. ``verbose=True`` prints one line on stderr per kernel after
    its first call: which kernel, whether its module was generated or loaded from the cache, and the times.
    """
    if grad_options.get("checkpoint"):
        warnings.warn(f"rc.compile(checkpoint={grad_options['checkpoint']!r}): the compiled kernel computes the "
                      "checkpointed gradients but keeps every step's values, so it saves no memory; "
                      "rc.interpret(rc.grad(model, checkpoint=...), ...) does", RuntimeWarning, stacklevel=2)
    if target == "cuda":            # options scan= and results=: see rnnc.runtime.cuda.CudaCompiled
        from rnnc.runtime.cuda import CudaCompiled

        return CudaCompiled(model, dtype, **grad_options)
    if target != "cpu":
        raise ValueError(f"target must be 'cpu' or 'cuda', got {target!r}")
    return Compiled(model, dtype, threads=threads, verbose=verbose, **grad_options)
