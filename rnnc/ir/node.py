"""Frozen IR nodes and loop axes.

A :class:`Node` is one value of a model: an op applied to input nodes. Its runtime array has the layout
``(*sizes of node.axes, [B if node.batched], *node.shape)``. Nodes are immutable and compared by identity;
passes build new nodes instead of editing old ones.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rnnc.ir.names import check_name
from rnnc.ir.where import user_line  # noqa: F401  (re-exported: ops name the user's line in errors)

_axis_order = itertools.count()
_node_ids = itertools.count()


@dataclass(frozen=True, eq=False)
class Axis:
    """A named loop axis (``t``, ``i``, ``j``...). ``t - 1`` and ``t + 2`` give :class:`AxisShift` indices.

    ``name`` follows the rule of every name (:func:`rnnc.ir.names.check_name`): a ``ValueError`` otherwise.
    """

    name: str
    order: int = field(default_factory=lambda: next(_axis_order))

    def __post_init__(self):
        object.__setattr__(self, "name", check_name(self.name, "axis"))

    def __sub__(self, k: int) -> AxisShift:
        return AxisShift(self, -_int_offset(k))

    def __add__(self, k: int) -> AxisShift:
        return AxisShift(self, _int_offset(k))

    def __repr__(self) -> str:
        return self.name


def _int_offset(k: Any) -> int:
    """An axis offset: a Python or numpy integer (not a bool). Its size is checked where it indexes a value
    (``rnnc.ops.leaves.MAX_DELAY``), so that the error can name that value."""
    from numbers import Integral

    if isinstance(k, bool) or not isinstance(k, Integral):
        raise TypeError(f"axis offsets are integer constants, got {k!r} at {user_line()}")
    return int(k)


@dataclass(frozen=True)
class AxisShift:
    """An index ``axis + offset`` inside a reference such as ``h[t-1]``."""

    axis: Axis
    offset: int

    def __repr__(self) -> str:
        if self.offset == 0:
            return self.axis.name
        return f"{self.axis.name}{self.offset:+d}"


def sort_axes(axes) -> tuple[Axis, ...]:
    """Axes in their canonical order (declaration order), without duplicates."""
    return tuple(sorted(set(axes), key=lambda a: a.order))


@dataclass(frozen=True, eq=False)
class Node:
    """One IR value.

    Attributes
    ----------
    op : str
        Name of the op in :mod:`rnnc.ops` (its shape rule, numpy reference and VJP live there).
    inputs : tuple of Node
    attrs : mapping
        Op parameters (hashable values only).
    shape : tuple of int
        Per-sample, per-index feature shape.
    dtype : str
        ``"float"`` (resolved to float32/float64 at run time) or ``"int"``.
    axes : tuple of Axis
        Loop axes the value varies along, in canonical order.
    batched : bool
        Whether the value has the implicit batch dimension.
    where : str
        The user's ``file:line`` where the node was written.
    name : str or None
        A user-facing name (signal, input, param, output), if any.
    """

    op: str
    inputs: tuple
    attrs: Mapping[str, Any]
    shape: tuple
    dtype: str
    axes: tuple
    batched: bool
    where: str = "<rnnc>"
    name: str | None = None
    id: int = field(default_factory=lambda: next(_node_ids))

    def __post_init__(self):
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    @property
    def lead(self) -> int:
        """Number of leading (axes + batch) dimensions of the runtime array."""
        return len(self.axes) + int(self.batched)

    def label(self) -> str:
        """A short readable name: the user's name, or ``op#id``."""
        return self.name if self.name else f"{self.op}#{self.id}"

    def __repr__(self) -> str:
        axes = ",".join(a.name for a in self.axes)
        return f"<{self.label()} {self.op}[{axes}] {self.shape}>"

    # Arithmetic on nodes (+ - * / @, unary -, x[i]) builds new nodes: rnnc.ops.operators attaches those methods
    # when rnnc.ops is imported (as jax.numpy attaches its array methods), so the IR does not import the ops.

    def __bool__(self):
        raise TypeError(f"an rnnc value has no truth value ({self.label()}); use rc.where for choices")

    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self.label()} is symbolic; run the model (rc.interpret) to get arrays")

    __array_priority__ = 1000
