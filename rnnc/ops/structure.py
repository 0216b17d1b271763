"""Feature-structure ops: concat, slice / split, reshape, one-hot, softmax and log-softmax (last axis)."""
from __future__ import annotations

import numpy as np

from rnnc.errors import ShapeError
from rnnc.ir.node import user_line
from rnnc.ops.elementwise import exp
from rnnc.ops.reduce import expand, fsum
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
         lambda n, *xs: np.concatenate(_lead_broadcast(xs, n.lead), axis=-1), _concat_vjp, row_local=True,
         cuda_reuses_cpu=True)


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
         lambda n, g: (make("pad", [g], start=n.attr("start"), size=n.inputs[0].shape[-1]),),
         scalar_cpu=lambda x: x, arithmetic=True)      # in a fused loop: a shift of the feature index
register("pad", lambda i, a: (i[0].shape[:-1] + (a["size"],), "float"), _pad_np,
         lambda n, g: (slice_features(g, n.attr("start"), n.attr("start") + n.inputs[0].shape[-1]),),
         cuda_reuses_cpu=True)


def _reshape_shape(inputs, attrs):
    (x,) = inputs
    if int(np.prod(x.shape)) != int(np.prod(attrs["shape"])):
        raise shape_error("reshape", inputs, f"cannot reshape to {attrs['shape']}")
    return attrs["shape"], x.dtype


register("reshape", _reshape_shape, lambda n, x: x.reshape(x.shape[:n.lead] + n.shape),
         lambda n, g: (reshape(g, n.inputs[0].shape),), cuda_reuses_cpu=True)


def _one_hot_np(node, y):
    k = node.attr("classes")
    return (y[..., None].astype(np.int64) == np.arange(k)).astype(np.float64)


def _one_hot_shape(inputs, attrs):
    (y,) = inputs
    if y.dtype != "int":
        raise shape_error("one_hot", inputs, f"{y.label()} is {y.dtype}; class indices must be an integer value "
                                              "(an input with dtype='int')")
    if y.shape != ():
        raise shape_error("one_hot", inputs, "expects one class index per sample and step")
    return (attrs["classes"],), "float"


register("one_hot", _one_hot_shape, _one_hot_np, lambda n, g: (None,), cuda_reuses_cpu=True, differentiable=False,
         indexes=lambda n: [(0, n.attr("classes") - 1, "class index of one_hot")])


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
    return (node * (g - expand(fsum(g * node, -1), node.shape, -1)),)


def _log_softmax_vjp(node, g):
    return (g - exp(node) * expand(fsum(g, -1), node.shape, -1),)


register("softmax", _vector_shape("softmax"), _softmax_np, _softmax_vjp, cuda_reuses_cpu=True)
register("log_softmax", _vector_shape("log_softmax"), _log_softmax_np, _log_softmax_vjp, cuda_reuses_cpu=True)


def concat(xs, axis: int = -1):
    """Concatenate along the last feature dimension: :math:`[a; b; \\dots]`."""
    if axis != -1:
        raise ValueError(f"concat joins along the last feature axis (axis=-1), got axis={axis}")
    xs = [as_node(x) for x in xs]
    return xs[0] if len(xs) == 1 else make("concat", xs)


def slice_features(x, start: int, stop: int):
    """``x[..., start:stop]`` on the last feature dimension (``0 <= start < stop <= size``)."""
    return make("slice", [x], start=_int_arg("slice_features", "start", start),
                stop=_int_arg("slice_features", "stop", stop))


def _int_arg(op: str, what: str, value) -> int:
    """An integer argument given by the user (a Python or numpy int, not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {what} must be an int, got {value!r} at {user_line()}")
    return int(value)


def split(x, sizes):
    """Split the last feature dimension into consecutive parts of the given sizes."""
    x = as_node(x)
    if not isinstance(sizes, (tuple, list)) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s >= 1 for s in sizes):
        raise shape_error("split", [x], f"sizes must be a list of positive ints, got {sizes!r}")
    if not x.shape or sum(sizes) != x.shape[-1]:
        raise shape_error("split", [x], f"sizes {list(sizes)} do not add up to {x.shape[-1] if x.shape else 0}")
    out, start = [], 0
    for s in sizes:
        out.append(slice_features(x, start, start + s))
        start += s
    return out


def feature_index(x, key):
    """``x[k]`` or ``x[a:b]`` on the last feature dimension (features only; loop axes use references).

    Indices follow Python within range: ``-size <= k < size`` (``-1`` is the last feature); a slice's bounds lie
    in ``[-size, size]`` and select at least one feature, with step 1. Anything else is refused, never wrapped
    or clamped.
    """
    x = as_node(x)
    written = f"{_written_name(x)}[{_key_text(key)}]"
    if not x.shape:
        raise ShapeError(f"{written}: {x.label()} is a scalar (shape ()); it has no features to index "
                         f"at {user_line()}")
    size = x.shape[-1]
    if isinstance(key, slice):
        start, stop = _slice_bounds(written, key, size)
        return slice_features(x, start, stop)
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        if not -size <= key < size:
            raise ShapeError(f"{written}: feature index {int(key)} is out of range for {size} features "
                             f"(valid: {-size} to {size - 1}) at {user_line()}")
        k = int(key) % size
        return reshape(slice_features(x, k, k + 1), x.shape[:-1])
    raise TypeError(f"{written}: features are indexed with an int or a slice, got {type(key).__name__} "
                    f"at {user_line()}")


def _written_name(x) -> str:
    """How the user wrote ``x``: ``x[t]`` for a reference at the current index, else its label."""
    if x.op == "ref" and not x.attr("offset") and x.axes:
        return f"{x.name}[{', '.join(a.name for a in x.axes)}]"
    return x.label()


def _key_text(key) -> str:
    """The index as the user wrote it: ``7``, ``5:9``, ``:2``."""
    def text(v):
        if v is None:
            return ""
        return str(int(v)) if isinstance(v, np.integer) else repr(v)

    if not isinstance(key, slice):
        return text(key)
    out = f"{text(key.start)}:{text(key.stop)}"
    return out if key.step is None else f"{out}:{text(key.step)}"


def _slice_bounds(written: str, key: slice, size: int) -> tuple[int, int]:
    """Bounds of a feature slice, checked against ``size`` features and normalised to ``0 <= a < b <= size``."""
    if key.step is not None and (isinstance(key.step, (bool, np.bool_)) or key.step != 1):
        raise ValueError(f"{written}: feature slices take step 1 at {user_line()}")
    bounds = []
    for value, default in ((key.start, 0), (key.stop, size)):
        if value is None:
            value = default
        elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{written}: slice bounds must be ints, got {value!r} at {user_line()}")
        elif not -size <= value <= size:
            raise ShapeError(f"{written}: slice bound {int(value)} is out of range for {size} features "
                             f"(valid: {-size} to {size}) at {user_line()}")
        bounds.append(int(value) % size if value < 0 else int(value))
    start, stop = bounds
    if start >= stop:
        raise ShapeError(f"{written}: the slice is empty ({start}:{stop} of {size} features) at {user_line()}")
    return start, stop


def reshape(x, shape):
    """Reshape the per-sample features (loop axes and batch are untouched); ``shape`` holds positive ints."""
    items = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if not isinstance(items, (tuple, list)) or any(
            isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 1 for s in items):
        raise ShapeError(f"reshape of {as_node(x).label()}: shape must be a positive int or a tuple of them, "
                         f"got {shape!r} at {user_line()}")
    return make("reshape", [x], shape=tuple(int(s) for s in items))


def one_hot(y, classes: int):
    """One-hot vectors of length ``classes`` for integer class indices: :math:`e_k = [y = k]`, ``0 <= k < classes``.

    ``y`` must be an integer value (an input declared with ``dtype="int"``) and ``classes >= 1``.
    """
    if isinstance(classes, (bool, np.bool_)) or not isinstance(classes, (int, np.integer)) or classes < 1:
        raise ValueError(f"one_hot of {as_node(y).label()}: classes must be an int >= 1, got {classes!r} "
                         f"at {user_line()}")
    return make("one_hot", [y], classes=int(classes))


def softmax(x):
    """:math:`\\mathrm{softmax}(x)_k = e^{x_k} / \\sum_j e^{x_j}` over the last feature dimension."""
    return make("softmax", [x])


def log_softmax(x):
    """:math:`x_k - \\log \\sum_j e^{x_j}` over the last feature dimension."""
    return make("log_softmax", [x])
