"""Contraction of hidden nodes: the edges between drawn values, labelled by what the hidden path meets.

A drawing that shows only named values (``x``, ``h``, ``o``, the loss) needs, for every drawn value, the
drawn values it reads and a label for each such edge: the params met on the way (``U`` for ``x -> h`` in
``h[t] = tanh(U @ x[t] + W @ h[t-1] + b)``), the axis reductions passed (``sum t``) and the delay of a
reference (``t-1``). One pass in topological order computes it for every node (no recursion):

* a *source* (a drawn value, or a reference standing for one) shows itself to its consumers;
* any other node shows the union of what its inputs show; an op that reads params adds their names to
  every path that has not met a param yet (so ``b`` in ``U @ x + b`` stays off the ``x`` edge, which is
  labelled by the matrix nearest to the source, as in the lecture's figures).
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

REDUCTIONS = {"asum": "sum", "amean": "mean", "last": "last", "first": "first", "edge_sum": "sum"}


@dataclass
class Path:
    """What the paths from one source to one node have met: params, reductions, and whether some path
    has met no param yet (``bare``)."""

    params: set = field(default_factory=set)
    bare: bool = True
    via: set = field(default_factory=set)

    def label(self, delay: str | None) -> str:
        parts = sorted(self.params) + sorted(self.via)
        if delay:
            parts.append(delay)
        return ", ".join(parts)


def contract(order: Iterable[Hashable],
             preds: Callable[[Hashable], Iterable[tuple]],
             source: Callable[[Hashable], tuple | None],
             param: Callable[[Hashable], str | None],
             via: Callable[[Hashable], str | None],
             keep: Callable[[Hashable], bool]) -> dict:
    """Edges into each kept node.

    Parameters
    ----------
    order : nodes in topological order (inputs first).
    preds(n) : ``(pred, delay)`` pairs; ``delay`` (e.g. ``"t-1"``) or None.
    source(n) : ``(key, delay)`` when consumers see ``n`` as the drawn value ``key``; a dict
        ``{(key, delay): Path}`` when they see it as those values (a reference to a hidden value); None
        otherwise.
    param(n) : a param's name when ``n`` is a hidden param (collected into labels), else None.
    via(n) : a reduction label for op ``n`` (e.g. ``"sum t"``), else None.
    keep(n) : whether the edges into ``n`` are wanted.

    Returns
    -------
    dict mapping each kept node to ``{(source key, delay): Path}``.
    """
    shown: dict = {}
    edges: dict = {}
    for n in order:
        if param(n) is not None:
            continue
        incoming = _incoming(n, preds, shown, param, via)
        if keep(n):
            edges[n] = incoming
        src = source(n)
        shown[n] = src if isinstance(src, dict) else {src: Path()} if src is not None else incoming
    return edges


def _incoming(n, preds, shown, param, via) -> dict:
    pairs = list(preds(n))
    here = {param(p) for p, _ in pairs} - {None}
    through = via(n)
    out: dict = {}
    for p, edge_delay in pairs:
        if param(p) is not None:
            continue
        for (key, delay), path in shown.get(p, {}).items():
            slot = (key, delay or edge_delay)
            acc = out.get(slot)
            if acc is None:
                acc = out[slot] = Path(bare=False)
            acc.params |= path.params | (here if path.bare else set())
            acc.bare = acc.bare or (path.bare and not here)
            acc.via |= path.via
            if through:
                acc.via.add(through)
    return out
