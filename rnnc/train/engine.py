"""The one place training touches a backend: ``engine.loss_and_grad(batch, params)`` and ``engine.forward``.

:class:`InterpretEngine` runs the numpy reference (``rc.interpret(rc.grad(m), ...)``); :class:`CompiledEngine`
runs ``rc.compile(m, target=...)``; :class:`AutoEngine` uses the compiled one and falls back to the
interpreter, with a warning, where the backend lacks an op. :func:`make_engine` picks one.

``grad_options`` (``truncate=(k1, k2)``, ``checkpoint=k``) reach :func:`rnnc.grad` in every engine, so the
gradients of truncated BPTT are the same whichever engine computes them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Step:
    """What one training step gives: the loss, the gradients by param name and the model's outputs."""

    loss: float
    grads: dict
    outputs: dict


class InterpretEngine:
    """Gradients from the interpreter: :math:`\\nabla_w L` = ``rc.interpret(rc.grad(m), batch, params).grads``.
    The graphs are lowered once, so the interpreter's schedule is built once (``interpreter_for`` caches it
    per graph), not on every step."""

    name = "interpret"

    def __init__(self, model, dtype: str = "float32", check_finite: bool = False, **grad_options):
        from rnnc.ir.graph import Graph

        self.model, self.dtype, self.check_finite = model, dtype, check_finite
        self.graph = model if isinstance(model, Graph) else model.graph
        self.grad_options = grad_options
        self._grad_graph = None

    @property
    def grad_graph(self):
        """The lowered gradient graph (built on the first training step)."""
        if self._grad_graph is None:
            from rnnc.autodiff import grad

            self._grad_graph = grad(self.model, **self.grad_options).graph
        return self._grad_graph

    def loss_and_grad(self, batch: dict, params: dict) -> Step:
        from rnnc.interpret import interpret

        res = interpret(self.grad_graph, batch, params, dtype=self.dtype, check_finite=self.check_finite)
        return Step(res.loss, res.grads, res.outputs)

    def forward(self, batch: dict, params: dict) -> dict:
        from rnnc.interpret import interpret

        res = interpret(self.graph, batch, params, dtype=self.dtype, check_finite=self.check_finite)
        return {**res.outputs, "loss": res.loss}


class CompiledEngine:
    """Gradients from a compiled model: ``rc.compile(m, target).loss_and_grad(batch, params)``.

    On the CPU one kernel computes loss, gradients *and* the model's outputs (the batch statistics the
    trainer's running averages need, the probabilities for the accuracy): the gradient graph pruned to all
    three roots, so a training step never runs the forward pass twice.
    """

    name = "compiled"

    def __init__(self, model, dtype: str = "float32", target: str = "cpu", threads: int | None = None,
                 check_finite: bool = False, **grad_options):
        import rnnc

        self.model, self.dtype, self.target, self.check_finite = model, dtype, target, check_finite
        self.grad_options = grad_options
        # on CUDA, gradients and outputs come back as numpy arrays: the optimisers and the trainer are numpy
        extra = {"results": "host"} if target == "cuda" else {"threads": threads}
        self.fn = rnnc.compile(model, target=target, dtype=dtype, **extra, **grad_options)
        self._kernel = None

    def kernel(self):
        """The CPU kernel of ``prune(grad(m))`` (outputs, loss and gradients), built on first use."""
        if self._kernel is None:
            from rnnc.autodiff import grad
            from rnnc.passes.dce import prune
            from rnnc.runtime.kernel import Kernel

            self._kernel = Kernel(prune(grad(self.model, **self.grad_options).graph), self.fn.dtype,
                                  threads=self.fn.threads)
        return self._kernel

    def loss_and_grad(self, batch, params) -> Step:
        params = _cast(params, self.dtype)
        if self.target == "cpu":
            k = self.kernel()
            bufs = k.call(k.bind(batch, params, check_finite=self.check_finite))
            return Step(float(k.result(bufs, "loss")), {n: k.result(bufs, "grads", n) for n in k.names("grads")},
                        {n: k.result(bufs, "outputs", n) for n in k.names("outputs")})
        out = self.fn.loss_and_grad(batch, params, check_finite=self.check_finite)
        if isinstance(out, tuple):
            loss, grads = out[0], out[1]
            outputs = out[2] if len(out) > 2 else None
        else:
            loss, grads, outputs = out.loss, out.grads, getattr(out, "outputs", None)
        if outputs is None and self.model.outputs:   # batch statistics, probabilities: one more forward
            outputs = self.forward(batch, params)
        return Step(float(loss), dict(grads), dict(outputs or {}))

    def forward(self, batch, params) -> dict:
        out = self.fn.forward(batch, _cast(params, self.dtype), check_finite=self.check_finite)
        if isinstance(out, dict):
            return out
        return {**dict(out.outputs), "loss": getattr(out, "loss", None)}


class AutoEngine:
    """The compiled engine, or, when the backend lacks a rule for one of the model's ops, the interpreter —
    with a warning naming the op, never silently."""

    def __init__(self, model, dtype: str = "float32", check_finite: bool = False, **grad_options):
        self.model, self.dtype, self.check_finite = model, dtype, check_finite
        self.grad_options = grad_options
        try:
            self.impl = CompiledEngine(model, dtype, check_finite=check_finite, **grad_options)
        except Exception as e:  # noqa: BLE001 - reported below, then the reference runs
            self._fallback(e)
        self.name = self.impl.name

    def _fallback(self, err):
        import warnings

        warnings.warn(f"rnnc.train: compiled engine unavailable for model {getattr(self.model, 'name', '?')!r} "
                      f"({type(err).__name__}: {err}); training with the numpy interpreter", stacklevel=3)
        self.impl = InterpretEngine(self.model, self.dtype, self.check_finite, **self.grad_options)

    def _call(self, method, batch, params):
        try:
            return getattr(self.impl, method)(batch, params)
        except Exception as e:
            if self.impl.name != "compiled" or type(e).__name__ != "MissingTemplate":
                raise
            self._fallback(e)
            self.name = self.impl.name
            return getattr(self.impl, method)(batch, params)

    def loss_and_grad(self, batch, params) -> Step:
        return self._call("loss_and_grad", batch, params)

    def forward(self, batch, params) -> dict:
        return self._call("forward", batch, params)


def _cast(params, dtype):
    return {k: np.asarray(v, dtype=dtype) for k, v in params.items()}


def make_engine(model, kind: str = "auto", dtype: str = "float32", check_finite: bool = False, **grad_options):
    """``"interpret"``, ``"compiled"`` or ``"auto"`` (compiled when ``rc.compile`` exists, else interpreted).
    ``check_finite``: every call refuses NaN / Inf in its float inputs and params (``InputError``); ``"params"``:
    in its params only. ``grad_options`` go to :func:`rnnc.grad` (``truncate=(k1, k2)``)."""
    import rnnc

    if kind == "interpret":
        return InterpretEngine(model, dtype, check_finite, **grad_options)
    if kind == "compiled":
        return CompiledEngine(model, dtype, check_finite=check_finite, **grad_options)
    if kind == "auto" and hasattr(rnnc, "compile"):
        return AutoEngine(model, dtype, check_finite, **grad_options)
    if kind != "auto":
        raise ValueError(f"engine must be 'auto', 'interpret' or 'compiled', got {kind!r}")
    return InterpretEngine(model, dtype, check_finite, **grad_options)
