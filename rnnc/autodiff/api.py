"""``rc.grad``: the public entry point, and the gradient model object it returns."""
from __future__ import annotations

from rnnc.autodiff.grad import gradient_graph
from rnnc.ir.graph import Graph


class GradModel:
    """A model's gradient, as an rnnc model: forward equations + adjoint equations + ``grads``.

    Interpret, schedule, unroll, render and compile it like any model; ``rc.interpret(gm, ...).grads``
    holds :math:`\\partial L / \\partial w` for every requested name.
    """

    def __init__(self, graph: Graph, forward, truncate=None, checkpoint=None):
        self.graph, self.forward = graph, forward
        self.name = graph.name
        self.truncate, self.checkpoint = truncate, checkpoint

    def unroll(self, **sizes):
        """The acyclic unrolled gradient graph (reads like a textbook BPTT figure)."""
        from rnnc.schedule.unroll import unroll

        return unroll(self.graph, sizes)

    def init_params(self, seed: int = 0, dtype: str = "float32"):
        from rnnc.dsl.model import init_params

        return init_params(self.graph, seed, dtype)

    def _repr_svg_(self) -> str:
        from rnnc.viz import svg

        return svg(self.graph)

    def __repr__(self) -> str:
        return f"<GradModel {self.name}: grads of {', '.join(self.graph.grads)}>"


def grad(model, wrt=None, truncate=None, checkpoint=None) -> GradModel:
    """The gradient of ``model``'s loss as an rnnc model.

    Parameters
    ----------
    model : Model or Graph
    wrt : list of names, optional
        Params (default: all of them), float inputs and signals (the adjoint ``dL/dh[t]`` of a signal).
    truncate : (k1, k2), optional
        Truncated BPTT: chunks of ``k1`` steps, the gradient of each chunk's losses flows back at most ``k2``
        steps (see ``docs/bptt.md``). ``(T, T)`` is full BPTT.
    checkpoint : int, optional
        Keep a scan's state every ``checkpoint`` steps and recompute the rest during the backward scan.
    """
    graph = model if isinstance(model, Graph) else model.graph
    gg = gradient_graph(graph, wrt)
    if truncate is not None:
        from rnnc.autodiff.truncate import truncated_gradient_graph

        gg = truncated_gradient_graph(graph, wrt, truncate)
    if checkpoint is not None:
        if int(checkpoint) < 1:
            raise ValueError(f"checkpoint must be a positive number of steps, got {checkpoint!r}")
        gg = gg.replace(meta={**gg.meta, "checkpoint": int(checkpoint)})
    return GradModel(gg, model, truncate, checkpoint)
