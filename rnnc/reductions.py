"""Reductions over a loop axis, as public functions: ``rc.sum(h, t)``, ``rc.mean(h, t)``, ``rc.last(h, t)``."""
from __future__ import annotations

from rnnc.ir.node import Axis, Node
from rnnc.ops import as_node, make


def last(x, axis: Axis) -> Node:
    """``x`` at the last index of ``axis`` (each sample's own last step when the axis has lengths)."""
    return make("last", [as_node(x)], axis=axis)


def first(x, axis: Axis) -> Node:
    """``x`` at index 0 of ``axis``."""
    return make("first", [as_node(x)], axis=axis)


def sum(x, axis: Axis | None = None) -> Node:  # noqa: A001 - mirrors numpy's name
    """:math:`\\sum_t x[t]` over loop axis ``axis``, or over all features when ``axis`` is None."""
    if axis is None:
        return make("fsum", [as_node(x)], axis=None)
    return make("asum", [as_node(x)], axis=axis)


def mean(x, axis: Axis | None = None) -> Node:
    """:math:`\\frac{1}{T}\\sum_t x[t]` over loop axis ``axis`` (each sample's own length with lengths), or the
    mean over all features when ``axis`` is None."""
    if axis is None:
        return make("fmean", [as_node(x)], axis=None)
    return make("amean", [as_node(x)], axis=axis)

