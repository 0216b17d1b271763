"""``rc.flops``: the floating-point operations of a model's matrix products and convolutions.

A product op says what one element of its loop space costs (``OpDef.flops``: a multiply-add counts 2); the
count multiplies that by the size of the loop space, every loop axis the node or its inputs vary along times
the batch when any of them is batched:

.. math:: F = \\sum_{n \\in \\text{products}} f_n \\prod_{a \\in \\text{axes}(n)} |a| \\cdot B^{[n\\ \\text{batched}]}

so ``W @ h[t-1]`` in a scan of ``T`` steps counts :math:`2 H^2 T B`, and the weight gradient
``outer_sum(g, h)`` summed over the steps as much again. Count a gradient model (``rc.grad(m)``) for a
training step: its graph holds the forward products and the adjoint ones. What is counted is the model's own
arithmetic: a compiled kernel's recomputation (``checkpoint=k``) and the products of the zero padding of a
convolution are not, elementwise ops neither. Divided by an upper bound on a machine's rate for products (the
benchmarks take each core's best float32 product times the cores), it gives a time no implementation that
computes these products directly can beat there; the benchmarks print the ceiling that sets on a speed-up.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rnnc.ir.graph import Graph, static_sizes
from rnnc.ops.registry import opdef


@dataclass(frozen=True)
class FlopCount:
    """Floating-point operations per op name (``by_op``) for the given axis ``sizes`` and ``batch``."""

    by_op: dict
    sizes: dict = field(default_factory=dict)
    batch: int = 1

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __int__(self) -> int:
        return self.total

    def __str__(self) -> str:
        rows = [f"{op:<22}{n:>18,}" for op, n in sorted(self.by_op.items(), key=lambda kv: -kv[1])]
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        head = f"FLOPs of products (batch {self.batch}{', ' + sizes if sizes else ''})"
        return "\n".join([head, *rows, f"{'total':<22}{self.total:>18,}"])


def flops(model, sizes: dict | None = None, batch: int = 1) -> FlopCount:
    """The floating-point operations of ``model``'s products (see the module docstring for what counts).

    Parameters
    ----------
    model : Model, GradModel or Graph
    sizes : dict, optional
        Loop-axis sizes by name (``{"t": 100}``); axes the graph fixes itself (a patch grid's) need none.
    batch : int
        Samples per call.
    """
    graph = model if isinstance(model, Graph) else getattr(model, "graph", None)
    if not isinstance(graph, Graph):
        hint = " (for an nn.Classifier, count clf.build().model)" if hasattr(model, "layers") else ""
        raise TypeError(f"rc.flops expects a Model, GradModel or Graph, got {type(model).__name__}{hint}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    axes = {a.name: a for a in graph.axes()}
    given = dict(sizes or {})
    unknown = sorted(set(given) - set(axes))
    if unknown:
        raise ValueError(f"model {graph.name!r} has no axis {', '.join(map(repr, unknown))}; its axes are "
                         f"{sorted(axes)}")
    known = {a.name: n for a, n in static_sizes(graph).items()}
    for name, n in given.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"sizes: axis {name!r} needs a positive int, got {n!r}")
        if known.setdefault(name, n) != n:
            raise ValueError(f"sizes gives axis {name!r} size {n}, but the model fixes it at {known[name]}")
    by_op: Counter = Counter()
    for node in graph.nodes:
        rule = opdef(node.op).flops
        if rule is None:
            continue
        loop = {a for n in (node, *node.inputs) for a in n.axes}
        missing = sorted(a.name for a in loop if a.name not in known)
        if missing:
            raise ValueError(f"axis {missing[0]!r} of model {graph.name!r} has no size: pass sizes="
                             f"{{{missing[0]!r}: ...}}")
        space = batch if node.batched or any(n.batched for n in node.inputs) else 1
        for a in loop:
            space *= known[a.name]
        by_op[node.op] += space * rule(node)
    return FlopCount(dict(by_op), {k: known[k] for k in sorted(known)}, batch)
