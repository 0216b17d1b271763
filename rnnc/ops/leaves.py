"""Leaf ops (inputs, params, constants, sequence lengths), the step mask, and references ``s[t-k]``.

References are evaluated by the interpreters themselves: they read another value at a shifted index, and
out of range they read the value's initial value (their optional single input) or zeros.
"""
from __future__ import annotations

import numpy as np

from rnnc.errors import GraphError
from rnnc.ir.node import Axis, Node, user_line
from rnnc.ops.registry import make, register, shared_axes


def _fixed_shape(inputs, attrs):
    return attrs["shape"], attrs["dtype"]


def _fixed_axes(inputs, attrs):
    return attrs["axes"], attrs["batched"]


def _leaf_np(node, *arrays):
    raise RuntimeError(f"{node.label()} is a leaf; the interpreter binds it")


for _name in ("input", "param", "lengths"):
    register(_name, _fixed_shape, _leaf_np, None, axes=_fixed_axes, leaf=True, differentiable=_name != "lengths")
register("const", lambda i, a: ((), "float"), lambda n: np.asarray(n.attr("value")), None,
         axes=shared_axes, leaf=True, differentiable=False)
register("ref", _fixed_shape, _leaf_np, None, axes=_fixed_axes, row_local=True)


def _step_mask_np(node, ctx, lengths):
    size = ctx.sizes[node.attr("axis")]
    return (np.arange(size)[:, None] < lengths[None, :]).astype(np.float64)


register("step_mask", lambda i, a: ((), "float"), _step_mask_np, lambda n, g: (None,),
         axes=lambda i, a: ((a["axis"],), True), aligned=False, cuda_reuses_cpu=True, differentiable=False)


def leaf(op: str, name: str, shape, dtype: str, axes, batched: bool, where: str | None = None) -> Node:
    return make(op, [], name=name, where=where or user_line(), shape=tuple(shape), dtype=dtype,
                axes=tuple(axes), batched=batched)


def step_mask(lengths: Node, axis: Axis) -> Node:
    """:math:`m[t, b] = [t < \\mathrm{len}_b]`, 1.0 on a sample's valid steps and 0.0 past its end."""
    return make("step_mask", [lengths], axis=axis)


MAX_DELAY = 10**6
"""The largest shift of a reference, in steps: ``h[t-k]`` needs ``|k| <= MAX_DELAY``."""


def check_delay(written: str, offset: int) -> int:
    """Refuse a reference shift beyond :data:`MAX_DELAY` steps (kernels index with machine integers)."""
    if abs(offset) > MAX_DELAY:
        raise GraphError(f"{written}: a shift of {abs(offset)} steps is beyond rnnc's limit of {MAX_DELAY} "
                         f"(rnnc.ops.leaves.MAX_DELAY) at {user_line()}")
    return int(offset)


def ref(value: str, axes, shape, dtype, batched, axis: Axis | None, offset: int, init: Node | None = None,
        where: str | None = None) -> Node:
    """Read named value ``value`` at index ``axis + offset`` (offset 0: the same index)."""
    check_delay(f"{value}[{axis.name if axis is not None else ''}{offset:+d}]", offset)
    label = value if not offset else f"{value}[{axis.name}{offset:+d}]"
    return make("ref", [] if init is None else [init], name=label, where=where or user_line(),
                value=value, axis=axis, offset=int(offset), shape=tuple(shape), dtype=dtype,
                axes=tuple(axes), batched=batched)


def tbptt_mask_values(size: int, k1: int, k2: int, shift: int, src: int, dst: int, mode: str) -> np.ndarray:
    """0/1 per step for truncated BPTT (see ``rnnc.autodiff.truncate``).

    Chunks of ``k1`` steps; chunk ``c`` ends at ``e_c`` and its gradient reaches back to ``s_c = e_c - k2 + 1``.
    ``mode="seed"``: loss adjoint at step u is kept iff ``u >= s_chunk(u)``. ``mode="flow"``: adjoint of stream
    ``src`` at reading step u (reading u - shift) moves to stream ``dst`` iff it stays in its chunk's window.
    ``mode="init"``: reads that fall before step 0 reach the initial value iff the reading step is in the
    window (the initial value is the state entering step 0, like ``h[s_c - 1]`` for a later window).
    """
    u = np.arange(size)
    chunk = u // k1
    last_chunk = (size - 1) // k1

    def start(c):
        return np.minimum((c + 1) * k1, size) - 1 - k2 + 1

    if mode == "seed":
        return (u >= start(chunk)).astype(np.float64)
    origin = chunk + src
    dest = u - shift
    if mode == "init":
        return ((origin <= last_chunk) & (u >= start(origin)) & (dest < 0)).astype(np.float64)
    ok = (origin <= last_chunk) & (dest >= start(origin))
    return (ok & (dest >= 0) & (origin - np.where(dest >= 0, dest, 0) // k1 == dst)).astype(np.float64)


def _tbptt_np(node, ctx):
    a = node.attrs
    return tbptt_mask_values(ctx.sizes[a["axis"]], a["k1"], a["k2"], a["shift"], a["src"], a["dst"], a["mode"])


register("tbptt_mask", lambda i, a: ((), "float"), _tbptt_np, None,
         axes=lambda i, a: ((a["axis"],), False), aligned=False, cuda_reuses_cpu=True)


def tbptt_mask(axis: Axis, k1: int, k2: int, shift: int = 0, src: int = 0, dst: int = 0, mode: str = "seed"):
    """A per-step 0/1 constant of truncated BPTT (:func:`tbptt_mask_values`), varying along ``axis``."""
    return make("tbptt_mask", [], axis=axis, k1=int(k1), k2=int(k2), shift=int(shift), src=int(src),
                dst=int(dst), mode=mode)
