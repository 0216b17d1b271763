"""Leaf ops (inputs, params, constants, sequence lengths), the step mask, and references ``s[t-k]``.

References are evaluated by the interpreters themselves: they read another value at a shifted index, and
out of range they read the value's initial value (their optional single input) or zeros.
"""
from __future__ import annotations

import numpy as np

from rnnc.ir.node import Axis, Node, user_line
from rnnc.ops.registry import make, register


def _fixed_shape(inputs, attrs):
    return attrs["shape"], attrs["dtype"]


def _fixed_axes(inputs, attrs):
    return attrs["axes"], attrs["batched"]


def _leaf_np(node, *arrays):
    raise RuntimeError(f"{node.label()} is a leaf; the interpreter binds it")


for _name in ("input", "param", "lengths"):
    register(_name, _fixed_shape, _leaf_np, None, axes=_fixed_axes)
register("const", lambda i, a: ((), "float"), lambda n: np.asarray(n.attr("value")), None,
         axes=lambda i, a: ((), False))
register("ref", _fixed_shape, _leaf_np, None, axes=_fixed_axes)


def _step_mask_np(node, ctx, lengths):
    size = ctx.sizes[node.attr("axis")]
    return (np.arange(size)[:, None] < lengths[None, :]).astype(np.float64)


register("step_mask", lambda i, a: ((), "float"), _step_mask_np, lambda n, g: (None,),
         axes=lambda i, a: ((a["axis"],), True), aligned=False)


def leaf(op: str, name: str, shape, dtype: str, axes, batched: bool, where: str | None = None) -> Node:
    return make(op, [], name=name, where=where or user_line(), shape=tuple(shape), dtype=dtype,
                axes=tuple(axes), batched=batched)


def step_mask(lengths: Node, axis: Axis) -> Node:
    """:math:`m[t, b] = [t < \\mathrm{len}_b]`, 1.0 on a sample's valid steps and 0.0 past its end."""
    return make("step_mask", [lengths], axis=axis)


def ref(value: str, axes, shape, dtype, batched, axis: Axis | None, offset: int, init: Node | None = None,
        where: str | None = None) -> Node:
    """Read named value ``value`` at index ``axis + offset`` (offset 0: the same index)."""
    label = value if not offset else f"{value}[{axis.name}{offset:+d}]"
    return make("ref", [] if init is None else [init], name=label, where=where or user_line(),
                value=value, axis=axis, offset=int(offset), shape=tuple(shape), dtype=dtype,
                axes=tuple(axes), batched=batched)
