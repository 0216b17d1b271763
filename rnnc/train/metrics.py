"""What the trainer reports besides the loss, chosen by the model's loss terms.

* every loss term is ``softmax_cross_entropy`` or ``binary_cross_entropy``: **accuracy**, the fraction of valid
  predictions that are right (``argmax`` of the logits against the class index, or of a one-hot / probability
  target; ``p > 0.5`` against ``y > 0.5`` for a binary cross-entropy, element by element);
* every loss term is ``mse``: **MSE**, :math:`\\frac{1}{N}\\sum (a - b)^2` over the ``N`` valid elements;
* anything else: the loss only.

"Valid" leaves out the steps past a sample's length (inputs declared with ``lengths=True``). The predictions are
read as extra outputs of the model's graph (the inputs of each loss term), so a compiled training step returns
them with the gradients and no second forward pass is run; targets that are the model's inputs are read from
the batch. Sums are kept per epoch (``correct``/``sq`` over ``count``), so a resumed epoch reports exactly
what an uninterrupted one does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnc.ir.graph import Graph, topo_order

CLASSIFICATION = ("softmax_cross_entropy", "binary_cross_entropy")
REGRESSION = ("mse",)


@dataclass(frozen=True)
class Term:
    """One loss term whose prediction (and maybe target) the graph outputs, laid out along ``axes``."""

    op: str
    axes: tuple          # the term's loop axes
    pred: str            # output name of the prediction
    pred_axes: tuple
    target: str          # output name, or the input name when ``from_batch``
    target_axes: tuple
    from_batch: bool


class Metrics:
    """The metric of a graph's loss (``kind``: ``"accuracy"``, ``"mse"`` or None) and ``graph``: the graph with
    one output per prediction (and computed target) the metric reads."""

    def __init__(self, graph: Graph):
        self.source = graph
        cone = topo_order([graph.loss]) if graph.loss is not None else []
        ops = [n for n in cone if n.op in CLASSIFICATION + REGRESSION]
        kinds = {"accuracy" if n.op in CLASSIFICATION else "mse" for n in ops}
        self.kind = kinds.pop() if len(kinds) == 1 else None
        self.terms: list[Term] = []
        extra: dict = {}
        if self.kind is not None:
            for node in ops:
                term = _term(graph, node, extra, len(self.terms))
                if term is None:             # a target rnnc cannot read back (a computed integer)
                    self.kind, self.terms, extra = None, [], {}
                    break
                self.terms.append(term)
        self.graph = graph.replace(outputs={**graph.outputs, **extra}) if extra else graph
        self.lengths = {axis.name: leaf.name for axis, leaf in graph.lengths.items()}

    def names(self) -> set:
        """The outputs added for the metric (not the model's own)."""
        return set(self.graph.outputs) - set(self.source.outputs)

    def sums(self, outputs: dict, batch: dict) -> tuple[float, int]:
        """``(correct or squared-error sum, count of valid predictions or elements)`` of one batch."""
        hit, count = (0 if self.kind == "accuracy" else 0.0), 0
        for term in self.terms:
            pred = _align(np.asarray(outputs[term.pred]), term.pred_axes, term.axes)
            source = batch if term.from_batch else outputs
            target = _align(np.asarray(source[term.target]), term.target_axes, term.axes)
            lead = len(term.axes) + 1
            mask = self._mask(np.broadcast_shapes(pred.shape[:lead], target.shape[:lead]), term.axes, batch)
            h, c = _score(term.op, pred, target, mask, lead)
            hit, count = hit + h, count + c
        return hit, count

    def _mask(self, shape: tuple, axes: tuple, batch: dict) -> np.ndarray:
        """True where a step is inside its sample's length, of ``shape`` ``(*axes, B)``."""
        lead = len(axes) + 1
        mask = np.ones(shape, dtype=bool)
        for k, axis in enumerate(axes):
            name = self.lengths.get(axis)
            if name is None or name not in batch:
                continue
            steps = np.arange(shape[k]).reshape((-1,) + (1,) * (lead - 1 - k))
            mask &= steps < np.asarray(batch[name])
        return mask

    def row(self, hit: float, count: int) -> dict:
        """``{"accuracy": ...}``, ``{"mse": ...}`` or ``{}``."""
        if self.kind is None:
            return {}
        return {self.kind: float(hit) / max(count, 1)}


def _term(graph: Graph, node, extra: dict, k: int) -> Term | None:
    pred, target = node.inputs
    names = set(graph.outputs) | set(graph.values) | set(graph.inputs) | set(graph.params) | set(extra)
    pred_name = _fresh(f"_metric{k}_pred", names)
    extra[pred_name] = pred
    source = _input_read(graph, target)
    if source is not None:
        return Term(node.op, _names(node.axes), pred_name, _names(pred.axes), source,
                    _names(graph.inputs[source].axes), True)
    if target.dtype == "int":
        return None
    target_name = _fresh(f"_metric{k}_target", names | {pred_name})
    extra[target_name] = target
    return Term(node.op, _names(node.axes), pred_name, _names(pred.axes), target_name, _names(target.axes), False)


def _input_read(graph: Graph, node) -> str | None:
    """The input a target reads unchanged (``y`` or ``y[t]``), or None."""
    if node.op == "input" and node.name in graph.inputs:
        return node.name
    if node.op == "ref" and not node.attr("offset") and node.attr("value") in graph.inputs:
        return node.attr("value")
    return None


def _fresh(name: str, taken: set) -> str:
    k = 0
    while f"{name}{'_' * k}" in taken:
        k += 1
    return f"{name}{'_' * k}"


def _names(axes) -> tuple:
    return tuple(a.name for a in axes)


def _align(arr: np.ndarray, have: tuple, want: tuple) -> np.ndarray:
    """An array laid out ``(*have, B, ...)`` viewed as ``(*want, B, ...)`` (size 1 along axes it lacks)."""
    if have == want:
        return arr
    shape = [arr.shape[have.index(a)] if a in have else 1 for a in want]
    order = [have.index(a) for a in want if a in have]
    arr = np.transpose(arr, order + list(range(len(have), arr.ndim)))
    return arr.reshape(shape + list(arr.shape[len(order):]))


def _score(op: str, pred: np.ndarray, target: np.ndarray, mask: np.ndarray, lead: int) -> tuple[float, int]:
    if op == "softmax_cross_entropy":
        want = target.argmax(-1) if target.ndim > lead else target      # one-hot / probabilities: their argmax
        right = np.broadcast_to(pred.argmax(-1) == want, mask.shape)
        return int((right & mask).sum()), int(mask.sum())
    every = mask.reshape(mask.shape + (1,) * (pred.ndim - lead))
    every = np.broadcast_to(every, np.broadcast_shapes(pred.shape, np.shape(target)))
    if op == "binary_cross_entropy":
        right = (pred > 0.5) == (target > 0.5)
        return int((right & every).sum()), int(every.sum())
    diff = np.where(every, pred - target, 0.0)
    return float((diff * diff).sum()), int(every.sum())
