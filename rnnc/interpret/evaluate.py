"""Evaluating one node on numpy arrays, in whatever slice of its layout the caller holds.

The three callers differ only in which loop axes are *indexed away*: a map holds whole arrays, a scan holds
one index of its axis, the unrolled interpreter one index of every axis. ``in_axes`` / ``out_axes`` tell the
axes the arrays actually carry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnc.ir.node import Axis, Node, sort_axes
from rnnc.ops import opdef
from rnnc.ops.layout import align


@dataclass
class Ctx:
    """What a non-aligned op's numpy rule needs to know about the arrays it gets."""

    in_axes: list
    out_axes: tuple
    sizes: dict
    batch: int | None


class NodeView:
    """A node seen with a different number of leading dims (some axes indexed away)."""

    def __init__(self, node: Node, lead: int):
        self._node, self.lead = node, lead

    def __getattr__(self, item):
        return getattr(self._node, item)


def evaluate(node: Node, arrays, in_axes, out_axes, sizes: dict, batch, dtype, index=None) -> np.ndarray:
    """Apply ``node``'s numpy rule; ``index`` (axis -> int) picks indexed-away axes an op adds."""
    spec = opdef(node.op)
    if spec.aligned:
        arrays = [align(a, ax, i.batched, out_axes, node.batched)
                  for a, ax, i in zip(arrays, in_axes, node.inputs)]
        out = spec.numpy(NodeView(node, len(out_axes) + int(node.batched)), *arrays)
    else:
        have = {a for i in node.inputs for a in i.axes}
        extra = [a for a in node.axes if a not in have and a not in out_axes]
        compute = sort_axes(list(out_axes) + extra)
        out = spec.numpy(node, Ctx(list(in_axes), compute, sizes, batch), *arrays)
        for a in sorted(extra, key=lambda a: -compute.index(a)):
            out = np.take(out, index[a], axis=compute.index(a))
    out = np.asarray(out)
    if node.dtype == "float" and out.dtype != dtype:
        out = out.astype(dtype)
    return out


def shift(arr: np.ndarray, pos: int, offset: int, fill: np.ndarray) -> np.ndarray:
    """``out[k] = arr[k + offset]`` along dim ``pos``; out-of-range entries take ``fill`` (broadcast)."""
    size = arr.shape[pos]
    out = np.empty(arr.shape, dtype=arr.dtype)
    src = [slice(None)] * arr.ndim
    dst = [slice(None)] * arr.ndim
    k = min(abs(offset), size)
    if offset < 0:
        dst[pos], src[pos] = slice(k, size), slice(0, size - k)
        edge = slice(0, k)
    else:
        dst[pos], src[pos] = slice(0, size - k), slice(k, size)
        edge = slice(size - k, size)
    out[tuple(dst)] = arr[tuple(src)]
    dst[pos] = edge
    out[tuple(dst)] = np.broadcast_to(np.expand_dims(fill, pos), out[tuple(dst)].shape)
    return out


def initial_fill(ref: Node, init, value: Node, axes_left, sizes: dict, batch, dtype) -> np.ndarray:
    """The initial value a reference reads out of range, laid out ``(*axes_left sizes, [B], *shape)``."""
    lead = tuple(sizes[a] for a in axes_left) + ((batch,) if value.batched else ())
    if init is None:
        return np.zeros(lead + value.shape, dtype=dtype if value.dtype == "float" else np.int64)
    arr = align(np.asarray(init), (), ref.inputs[0].batched, tuple(axes_left), value.batched)
    feat = arr.shape[len(lead):]
    arr = arr.reshape(arr.shape[:len(lead)] + (1,) * (len(value.shape) - len(feat)) + feat)
    return np.broadcast_to(arr, lead + value.shape)



__all__ = ["Axis", "Ctx", "evaluate", "shift", "initial_fill"]
