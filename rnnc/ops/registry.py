"""The op table: every op's rules in one place.

An :class:`OpDef` holds an op's shape rule, its numpy reference, its VJP (built from rnnc ops, so gradients
are graphs too) and, optionally, an axes rule and code templates that backends add. ``make`` builds a node
from an op name and checks it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnc.errors import GraphError, ShapeError
from rnnc.ir.node import Node, sort_axes, user_line

OPS: dict[str, OpDef] = {}


@dataclass
class OpDef:
    """Rules of one op.

    shape(inputs, attrs) -> (shape, dtype); raise :class:`ShapeError` via :func:`shape_error` on misfit.
    numpy(node, *arrays) -> array; the reference. With ``aligned`` (the default) every input array is given in
    the node's own lead layout (missing axes / batch as size-1 dims), followed by the input's feature dims.
    Without it, arrays come in their own layouts and the function receives ``ctx`` (axis sizes) too.
    vjp(node, g) -> one adjoint node (or None) per input, each shaped like that input.
    axes(inputs, attrs) -> (axes, batched); default: union of the inputs' axes, batched if any input is.
    """

    name: str
    shape: Callable
    numpy: Callable
    vjp: Callable | None = None
    axes: Callable | None = None
    aligned: bool = True
    elementwise: bool = False
    templates: dict[str, Any] = field(default_factory=dict)


def register(name: str, shape, numpy, vjp=None, axes=None, aligned=True, elementwise=False) -> OpDef:
    """Add an op to the table."""
    if name in OPS:
        raise ValueError(f"op {name!r} is registered twice")
    OPS[name] = OpDef(name, shape, numpy, vjp, axes, aligned, elementwise)
    return OPS[name]


def opdef(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise GraphError(f"unknown op {name!r}") from None


def shape_error(op: str, inputs, why: str) -> ShapeError:
    shapes = ", ".join(f"{n.label()}: {n.shape}" for n in inputs)
    return ShapeError(f"{op}: {why} (shapes {shapes}) at {user_line()}")


def as_node(x: Any) -> Node:
    """Turn a python number or a DSL value handle into a node."""
    if isinstance(x, Node):
        return x
    if hasattr(x, "__rnnc_node__"):
        return x.__rnnc_node__()
    if isinstance(x, (bool, np.bool_)):
        x = float(x)
    if isinstance(x, (int, float, np.integer, np.floating)):
        return Node("const", (), {"value": float(x)}, (), "float", (), False, user_line())
    raise TypeError(f"cannot use {type(x).__name__} {x!r} in an rnnc expression at {user_line()}")


def shared_axes(inputs, attrs) -> tuple[tuple, bool]:
    """Axes rule of a value shared by every sample and loop index (a reduction over all of them, a constant)."""
    return (), False


def default_axes(inputs, attrs, op: str = "") -> tuple[tuple, bool]:
    """Union of the inputs' axes; inputs' axis sets must nest (axis-free values broadcast)."""
    sets = sorted((frozenset(n.axes) for n in inputs), key=len)
    for small, big in zip(sets, sets[1:]):
        if not small <= big:
            names = ", ".join(f"{n.label()}[{','.join(a.name for a in n.axes)}]" for n in inputs)
            raise GraphError(f"{op}: cannot mix values on unrelated axes ({names}) at {user_line()}")
    axes = sort_axes(a for n in inputs for a in n.axes)
    return axes, any(n.batched for n in inputs)


def make(op: str, inputs, name: str | None = None, where: str | None = None, **attrs) -> Node:
    """Build and check a node: apply ``op`` to ``inputs`` with ``attrs``."""
    spec = opdef(op)
    inputs = tuple(as_node(x) for x in inputs)
    axes, batched = (spec.axes or (lambda i, a: default_axes(i, a, op)))(inputs, attrs)
    shape, dtype = spec.shape(inputs, attrs)
    return Node(op, inputs, attrs, tuple(int(s) for s in shape), dtype, axes, batched,
                where or user_line(), name)


def float_dtype(inputs) -> str:
    return "float" if any(n.dtype == "float" for n in inputs) or not inputs else "int"
