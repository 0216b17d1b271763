"""Feature-structure ops: concat, slice / split, reshape, one-hot, softmax and log-softmax (last axis)."""
from __future__ import annotations

import numpy as np

from rnnc.ops.registry import as_node, make, register, shape_error


def _lead_broadcast(arrays, lead):
    sizes = np.broadcast_shapes(*(a.shape[:lead] for a in arrays))
    return [np.broadcast_to(a, sizes + a.shape[lead:]) for a in arrays]


def _concat_shape(inputs, attrs):
    first = inputs[0].shape
    if not first or any(len(n.shape) != len(first) or n.shape[:-1] != first[:-1] for n in inputs):
        raise shape_error("concat", inputs, "needs equal shapes except the last feature dimension")
    return first[:-1] + (sum(n.shape[-1] for n in inputs),), "float"


def _concat_vjp(node, g):
    out, start = [], 0
    for n in node.inputs:
        out.append(slice_features(g, start, start + n.shape[-1]))
        start += n.shape[-1]
    return tuple(out)


register("concat", _concat_shape,
         lambda n, *xs: np.concatenate(_lead_broadcast(xs, n.lead), axis=-1), _concat_vjp)


def _slice_shape(inputs, attrs):
    (x,) = inputs
    if not x.shape or not 0 <= attrs["start"] < attrs["stop"] <= x.shape[-1]:
        raise shape_error("slice", inputs, f"slice [{attrs['start']}:{attrs['stop']}] is out of range")
    return x.shape[:-1] + (attrs["stop"] - attrs["start"],), x.dtype


def _pad_np(node, g):
    size = node.attr("size")
    out = np.zeros(g.shape[:-1] + (size,), dtype=g.dtype)
    out[..., node.attr("start"):node.attr("start") + g.shape[-1]] = g
    return out


register("slice", _slice_shape, lambda n, x: x[..., n.attr("start"):n.attr("stop")],
         lambda n, g: (make("pad", [g], start=n.attr("start"), size=n.inputs[0].shape[-1]),))
register("pad", lambda i, a: (i[0].shape[:-1] + (a["size"],), "float"), _pad_np,
         lambda n, g: (slice_features(g, n.attr("start"), n.attr("start") + n.inputs[0].shape[-1]),))


def _reshape_shape(inputs, attrs):
    (x,) = inputs
    if int(np.prod(x.shape)) != int(np.prod(attrs["shape"])):
        raise shape_error("reshape", inputs, f"cannot reshape to {attrs['shape']}")
    return attrs["shape"], x.dtype


register("reshape", _reshape_shape, lambda n, x: x.reshape(x.shape[:n.lead] + n.shape),
         lambda n, g: (reshape(g, n.inputs[0].shape),))


def _one_hot_np(node, y):
    k = node.attr("classes")
    return (y[..., None].astype(np.int64) == np.arange(k)).astype(np.float64)


def _one_hot_shape(inputs, attrs):
    if inputs[0].shape != ():
        raise shape_error("one_hot", inputs, "expects one class index per sample and step")
    return (attrs["classes"],), "float"


register("one_hot", _one_hot_shape, _one_hot_np, lambda n, g: (None,))


def _softmax_np(node, x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _log_softmax_np(node, x):
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _vector_shape(op):
    def rule(inputs, attrs):
        if not inputs[0].shape:
            raise shape_error(op, inputs, "needs a feature dimension")
        return inputs[0].shape, "float"
    return rule


def _softmax_vjp(node, g):
    from rnnc.ops.reduce import expand, fsum

    return (node * (g - expand(fsum(g * node, -1), node.shape, -1)),)


def _log_softmax_vjp(node, g):
    from rnnc.ops.elementwise import exp
    from rnnc.ops.reduce import expand, fsum

    return (g - exp(node) * expand(fsum(g, -1), node.shape, -1),)


register("softmax", _vector_shape("softmax"), _softmax_np, _softmax_vjp)
register("log_softmax", _vector_shape("log_softmax"), _log_softmax_np, _log_softmax_vjp)


def concat(xs, axis: int = -1):
    """Concatenate along the last feature dimension: :math:`[a; b; \\dots]`."""
    if axis != -1:
        raise ValueError(f"concat joins along the last feature axis (axis=-1), got axis={axis}")
    xs = [as_node(x) for x in xs]
    return xs[0] if len(xs) == 1 else make("concat", xs)


def slice_features(x, start: int, stop: int):
    """``x[..., start:stop]`` on the last feature dimension."""
    return make("slice", [x], start=int(start), stop=int(stop))


def split(x, sizes):
    """Split the last feature dimension into consecutive parts of the given sizes."""
    x = as_node(x)
    if sum(sizes) != x.shape[-1]:
        raise shape_error("split", [x], f"sizes {list(sizes)} do not add up to {x.shape[-1]}")
    out, start = [], 0
    for s in sizes:
        out.append(slice_features(x, start, start + s))
        start += s
    return out


def feature_index(x, key):
    """``x[a:b]`` or ``x[k]`` on the last feature dimension (features only; loop axes use references)."""
    if isinstance(key, slice):
        if key.step not in (None, 1):
            raise ValueError("feature slices take step 1")
        start, stop, _ = key.indices(x.shape[-1] if x.shape else 0)
        return slice_features(x, start, stop)
    if isinstance(key, int):
        k = key % x.shape[-1] if x.shape else key
        return reshape(slice_features(x, k, k + 1), x.shape[:-1])
    raise TypeError(f"{x.label()}: features are indexed with an int or a slice, got {key!r}")


def reshape(x, shape):
    """Reshape the per-sample features (loop axes and batch are untouched)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return make("reshape", [x], shape=shape)


def one_hot(y, classes: int):
    """One-hot vectors of length ``classes`` for integer class indices."""
    return make("one_hot", [y], classes=int(classes))


def softmax(x):
    """:math:`\\mathrm{softmax}(x)_k = e^{x_k} / \\sum_j e^{x_j}` over the last feature dimension."""
    return make("softmax", [x])


def log_softmax(x):
    """:math:`x_k - \\log \\sum_j e^{x_j}` over the last feature dimension."""
    return make("log_softmax", [x])
