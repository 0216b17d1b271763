"""Reductions: over features, over a loop axis (``last``, ``first``, ``sum``, ``mean``), over the batch,
and the broadcasts that are their adjoints.

Ops here that change a value's axes take their inputs in their own layouts (``aligned=False``) together with
a ``ctx`` that tells each array's actual axes and the axis sizes.
"""
from __future__ import annotations

import numpy as np

from rnnc.errors import GraphError
from rnnc.ir.node import Axis, sort_axes, user_line
from rnnc.ops.registry import as_node, make, register, shape_error

# ----------------------------------------------------------------------------- feature reductions


def _feature_reduce_shape(op):
    def rule(inputs, attrs):
        (x,) = inputs
        if attrs["axis"] is None:
            return (), "float"
        if not x.shape:
            raise shape_error(op, inputs, "needs at least one feature dimension")
        return x.shape[:-1], "float"
    return rule


def _np_axes(node, x):
    return tuple(range(node.lead, x.ndim)) if node.attr("axis") is None else -1


def _max_mask(node, x):
    axis = _np_axes(node, x)
    if node.attr("axis") is None:
        flat = x.reshape(x.shape[:node.lead] + (-1,))
        hit = np.zeros_like(flat)
        np.put_along_axis(hit, flat.argmax(-1)[..., None], 1.0, -1)
        return hit.reshape(x.shape)
    hit = np.zeros_like(x)
    np.put_along_axis(hit, x.argmax(axis)[..., None], 1.0, -1)
    return hit


def _expand_np(node, g):
    shape = node.shape
    if node.attr("axis") is not None:
        g = g[..., None]
    else:
        g = g.reshape(g.shape + (1,) * len(shape))
    return np.broadcast_to(g, g.shape[:node.lead] + shape)


register("fsum", _feature_reduce_shape("fsum"), lambda n, x: x.sum(_np_axes(n, x)),
         lambda n, g: (expand(g, n.inputs[0].shape, n.attr("axis")),), cuda_reuses_cpu=True)
register("fmean", _feature_reduce_shape("fmean"), lambda n, x: x.mean(_np_axes(n, x)),
         lambda n, g: (expand(g, n.inputs[0].shape, n.attr("axis")) / _count(n),), cuda_reuses_cpu=True)
register("fmax", _feature_reduce_shape("fmax"), lambda n, x: x.max(_np_axes(n, x)),
         lambda n, g: (expand(g, n.inputs[0].shape, n.attr("axis")) * max_mask(n.inputs[0], n.attr("axis")),),
         cuda_reuses_cpu=True)
register("max_mask", lambda i, a: (i[0].shape, "float"), _max_mask, lambda n, g: (None,), cuda_reuses_cpu=True,
         differentiable=False)
register("expand", lambda i, a: (a["shape"], "float"), _expand_np,
         lambda n, g: (make("fsum", [g], axis=n.attr("axis")),),
         scalar_cpu=lambda x: x, arithmetic=True)      # in a fused loop: the dropped feature indices


def _count(node):
    shape = node.inputs[0].shape
    return float(np.prod(shape)) if node.attr("axis") is None else float(shape[-1])


def fsum(x, axis=None):
    """Sum over features: all of them (``axis=None``) or the last (``axis=-1``)."""
    return make("fsum", [x], axis=_feature_axis(axis))


def fmean(x, axis=None):
    """Mean over features: all of them (``axis=None``) or the last (``axis=-1``)."""
    return make("fmean", [x], axis=_feature_axis(axis))


def fmax(x, axis=None):
    """Maximum over features: all of them (``axis=None``) or the last (``axis=-1``)."""
    return make("fmax", [x], axis=_feature_axis(axis))


def max_mask(x, axis=None):
    """1.0 at the (first) maximum over the reduced features, 0.0 elsewhere."""
    return make("max_mask", [x], axis=_feature_axis(axis))


def expand(g, shape, axis=None):
    """Broadcast a feature-reduced value back to feature ``shape`` (adjoint of fsum)."""
    return make("expand", [g], shape=tuple(shape), axis=axis)


def _feature_axis(axis):
    if axis not in (None, -1):
        raise ValueError(f"feature reductions take axis=None (all) or axis=-1 (last), got {axis!r} at {user_line()}")
    return axis


# ----------------------------------------------------------------------------- sum_to (unbroadcast)


def _sum_to_axes(inputs, attrs):
    return attrs["axes"], attrs["batched"]


def _sum_to_np(node, ctx, g):
    src = node.inputs[0]
    in_axes = ctx.in_axes[0]
    lead_in = len(in_axes) + int(src.batched)
    drop = [k for k, a in enumerate(in_axes) if a not in ctx.out_axes]
    if src.batched and not node.batched:
        drop.append(len(in_axes))
    feat = g.shape[lead_in:]
    extra = len(feat) - len(node.shape)
    drop_feat = [lead_in + k for k in range(extra)]
    drop_feat += [lead_in + extra + k for k, s in enumerate(node.shape) if s == 1 and feat[extra + k] != 1]
    out = g.sum(tuple(drop + drop_feat), keepdims=True)
    keep = tuple(out.shape[k] for k in range(lead_in) if k not in drop)
    return out.reshape(keep + node.shape)


register("sum_to", lambda i, a: (a["shape"], "float"), _sum_to_np, None, axes=_sum_to_axes, aligned=False)


def sum_to(g, like):
    """Sum ``g`` over the axes, batch and broadcast feature dims that ``like`` lacks (unbroadcast)."""
    if g.axes == like.axes and g.batched == like.batched and g.shape == like.shape:
        return g
    if not set(like.axes) <= set(g.axes) or (like.batched and not g.batched):
        raise GraphError(f"sum_to: cannot reduce {g!r} to {like!r}")
    return make("sum_to", [g], axes=like.axes, batched=like.batched, shape=like.shape)


# ----------------------------------------------------------------------------- loop-axis reductions


def _minus_axis(inputs, attrs):
    x = inputs[0]
    if attrs["axis"] not in x.axes:
        raise GraphError(f"{x.label()} has no axis {attrs['axis'].name!r} to reduce over "
                         f"(its axes: {tuple(a.name for a in x.axes)}) at {user_line()}")
    return tuple(a for a in x.axes if a != attrs["axis"]), x.batched


def _plus_axis(inputs, attrs):
    axes = sort_axes(list(inputs[0].axes) + [attrs["axis"]])
    return axes, any(n.batched for n in inputs)


def _pos(ctx, k, axis):
    return ctx.in_axes[k].index(axis)


def _lengths_index(x, pos, lengths, batch_pos):
    idx = np.clip(lengths.astype(np.int64) - 1, 0, x.shape[pos] - 1)
    shape = [1] * x.ndim
    shape[batch_pos] = idx.shape[0]
    return idx.reshape(shape)


def _pick_np(which):
    def fn(node, ctx, x, *lengths):
        pos = _pos(ctx, 0, node.attr("axis"))
        if not lengths or which == "first":
            return np.take(x, 0 if which == "first" else -1, axis=pos)
        bpos = len(ctx.in_axes[0])
        idx = _lengths_index(x, pos, lengths[0], bpos)
        return np.take_along_axis(x, idx, axis=pos).squeeze(pos)
    return fn


def _mask_along(ctx, k, x, lengths, axis):
    pos = _pos(ctx, k, axis)
    bpos = len(ctx.in_axes[k])
    steps = np.arange(x.shape[pos])
    shape = [1] * x.ndim
    shape[pos] = x.shape[pos]
    mask = steps.reshape(shape)
    lshape = [1] * x.ndim
    lshape[bpos] = lengths.shape[0]
    return (mask < lengths.reshape(lshape)).astype(x.dtype)


def _asum_np(mean):
    def fn(node, ctx, x, *lengths):
        axis = node.attr("axis")
        pos = _pos(ctx, 0, axis)
        if lengths:
            total = (x * _mask_along(ctx, 0, x, lengths[0], axis)).sum(pos)
            if mean:
                lshape = [1] * total.ndim
                lshape[len(ctx.out_axes)] = lengths[0].shape[0]
                total = total / lengths[0].reshape(lshape).astype(x.dtype)
            return total
        return x.mean(pos) if mean else x.sum(pos)
    return fn


def _vjp_pick(which):
    def vjp(node, g):
        return (make("at_index", [g, *node.inputs[1:]], axis=node.attr("axis"), which=which),
                *([None] * (len(node.inputs) - 1)))
    return vjp


def _vjp_asum(mode):
    def vjp(node, g):
        return (make("spread", [g, *node.inputs[1:]], axis=node.attr("axis"), mode=mode),
                *([None] * (len(node.inputs) - 1)))
    return vjp


def _same_shape(inputs, attrs):
    return inputs[0].shape, inputs[0].dtype


register("last", _same_shape, _pick_np("last"), _vjp_pick("last"), axes=_minus_axis, aligned=False,
         cuda_reuses_cpu=True)
register("first", _same_shape, _pick_np("first"), _vjp_pick("first"), axes=_minus_axis, aligned=False,
         cuda_reuses_cpu=True)
register("asum", _same_shape, _asum_np(False), _vjp_asum("sum"), axes=_minus_axis, aligned=False)
register("amean", _same_shape, _asum_np(True), _vjp_asum("mean"), axes=_minus_axis, aligned=False)


def _out_with_axis(node, ctx, g):
    """Insert the node's axis into g (layout of input 0) at its position in ctx.out_axes."""
    axis = node.attr("axis")
    pos = ctx.out_axes.index(axis)
    size = ctx.sizes[axis]
    g = np.expand_dims(g, pos)
    full = list(g.shape)
    full[pos] = size
    return g, pos, size, tuple(full)


def _spread_np(node, ctx, g, *lengths):
    g, pos, size, full = _out_with_axis(node, ctx, g)
    out = np.broadcast_to(g, full)
    if lengths:
        bpos = len(ctx.out_axes)
        out = out * _mask_along(_Single(ctx.out_axes), 0, out, lengths[0], node.attr("axis"))
        if node.attr("mode") == "mean":
            lshape = [1] * out.ndim
            lshape[bpos] = lengths[0].shape[0]
            out = out / lengths[0].reshape(lshape).astype(out.dtype)
    elif node.attr("mode") == "mean":
        out = out / size
    return out


def _at_index_np(node, ctx, g, *lengths):
    g, pos, size, full = _out_with_axis(node, ctx, g)
    out = np.zeros(full, dtype=g.dtype)
    if node.attr("which") == "first":
        np.put_along_axis(out, np.zeros_like(g, dtype=np.int64), g, axis=pos)
    elif lengths:
        idx = _lengths_index(out, pos, lengths[0], len(ctx.out_axes))
        np.put_along_axis(out, np.broadcast_to(idx, g.shape), g, axis=pos)
    else:
        np.put_along_axis(out, np.full(g.shape, size - 1, dtype=np.int64), g, axis=pos)
    return out


class _Single:
    def __init__(self, axes):
        self.in_axes = [axes]


def _spread_vjp(node, g):
    if len(node.inputs) > 1 or node.attr("mode") != "sum":
        return (make("asum" if node.attr("mode") == "sum" else "amean", [g, *node.inputs[1:]],
                     axis=node.attr("axis")), *([None] * (len(node.inputs) - 1)))
    return (sum_to(g, node.inputs[0]),)


register("spread", _same_shape, _spread_np, _spread_vjp, axes=_plus_axis, aligned=False, cuda_reuses_cpu=True)
register("at_index", _same_shape, _at_index_np,
         lambda n, g: (make(n.attr("which"), [g, *n.inputs[1:]], axis=n.attr("axis")),
                       *([None] * (len(n.inputs) - 1))), axes=_plus_axis, aligned=False, cuda_reuses_cpu=True)


def _edge_sum_np(node, ctx, g):
    axis, offset = node.attr("axis"), node.attr("offset")
    pos = _pos(ctx, 0, axis)
    k = min(abs(offset), g.shape[pos])
    sl = [slice(None)] * g.ndim
    sl[pos] = slice(0, k) if offset < 0 else slice(g.shape[pos] - k, g.shape[pos])
    return g[tuple(sl)].sum(pos)


register("edge_sum", _same_shape, _edge_sum_np, None, axes=_minus_axis, aligned=False)


def edge_sum(g, axis: Axis, offset: int):
    """Sum of ``g`` over the indices where a read at ``axis + offset`` falls outside the axis.

    Adjoint of an initial value: ``sum(g[0:k])`` for offset ``-k``, ``sum(g[T-k:T])`` for ``+k``.
    """
    return make("edge_sum", [g], axis=axis, offset=offset)


# ----------------------------------------------------------------------------- batch


def _batch_mean_np(node, ctx, x):
    return x.mean(len(ctx.in_axes[0]))


def _batch_spread_np(node, ctx, g):
    pos = len(ctx.out_axes)
    g = np.expand_dims(g, pos)
    shape = list(g.shape)
    shape[pos] = ctx.batch
    return np.broadcast_to(g, shape) / ctx.batch


register("batch_mean", _same_shape, _batch_mean_np,
         lambda n, g: (make("batch_spread", [g]),), axes=lambda i, a: (i[0].axes, False), aligned=False)
register("batch_spread", _same_shape, _batch_spread_np, None,
         axes=lambda i, a: (i[0].axes, True), aligned=False, cuda_reuses_cpu=True)


def _to_batch_np(node, ctx, x):
    pos = len(ctx.out_axes)
    x = np.expand_dims(x, pos)
    shape = list(x.shape)
    shape[pos] = ctx.batch
    return np.broadcast_to(x, shape)


register("to_batch", _same_shape, _to_batch_np, lambda n, g: (sum_to(g, n.inputs[0]),),
         axes=lambda i, a: (i[0].axes, True), aligned=False, cuda_reuses_cpu=True)


def spread(x, axis: Axis):
    """Broadcast ``x`` along a loop axis it lacks: :math:`y[t] = x` for every index ``t``."""
    return make("spread", [x], axis=axis, mode="sum")


def to_batch(x):
    """Broadcast an unbatched value to every sample of the batch."""
    return make("to_batch", [x])


def batch_mean(x):
    """Mean over the batch: :math:`\\frac{1}{B}\\sum_b x_b`."""
    x = as_node(x)
    return make("batch_mean", [x]) if x.batched else x
