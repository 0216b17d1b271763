"""Batch normalisation in training mode as four ops, so that a step reads each feature map five times
(statistics, normalise; two in the backward) instead of once per elementwise op of the textbook formula.

With :math:`N` the count per channel (loop indices × samples × pixels), :math:`\\mu_c, \\sigma^2_c` the batch
statistics, :math:`r_c = 1/\\sqrt{\\sigma^2_c + \\epsilon}` and :math:`\\hat x = (x - \\mu) r`::

    bn_stats(x)                         s = [mu; var]                    (2C,)  biased variance
    batch_norm(x, s[, gamma, beta])     y = gamma x̂ + beta
    bn_sums(g, x, s)                    [sum g; sum g x̂]                 (2C,)
    bn_input_grad(g, x, s, sums[, gamma])   x̄ = gamma r (g - sum g / N - x̂ sum(g x̂) / N)
    bn_input_grad(g, x, s, sums[, gamma], z, mask=True)   x̄ [z > 0]   (a relu's gradient applied too: CPU pass)

``batch_norm``'s ``s`` must be ``bn_stats`` of the same ``x`` (checked when the node is built): its VJP is
the *total* derivative through the batch statistics (the formula for ``x̄`` above, as PyTorch's
``native_batch_norm`` backward), so ``s`` gets no adjoint of its own; the statistics are an input only so
that they are computed once and can be model outputs (the running averages). ``bn_stats`` alone has its own
VJP, :math:`\\bar x = \\bar\\mu / N + 2 (x - \\mu) \\overline{\\sigma^2} / N`.
"""
from __future__ import annotations

import numpy as np

from rnnc.errors import GraphError
from rnnc.ir.node import user_line
from rnnc.ops.elementwise import add, mul, sub
from rnnc.ops.image import channel_spread
from rnnc.ops.layout import align
from rnnc.ops.registry import as_node, make, register, shape_error, shared_axes
from rnnc.ops.structure import reshape, slice_features


def _channels(x) -> int:
    return int(x.shape[0])


def _lead(node_or_x, axes) -> int:
    return len(axes) + int(node_or_x.batched)


def _channel_view(arr: np.ndarray, lead: int, vec: np.ndarray) -> np.ndarray:
    """A per-channel vector ``(..., C)`` (lead dims size 1) shaped to broadcast over ``arr``'s (C, ...) features."""
    c = vec.shape[-1]
    return vec.reshape((1,) * lead + (c,) + (1,) * (arr.ndim - lead - 1))


def _moments(x: np.ndarray, lead: int) -> tuple[np.ndarray, np.ndarray]:
    red = tuple(k for k in range(x.ndim) if k != lead)
    mu = x.mean(axis=red)
    return mu, ((x - _channel_view(x, lead, mu)) ** 2).mean(axis=red)


# ----------------------------------------------------------------------------- bn_stats
def _stats_shape(inputs, attrs):
    (x,) = inputs
    if not x.shape:
        raise shape_error("bn_stats", inputs, "needs a channel dimension (C, ...)")
    return (2 * _channels(x),), "float"


def bn_stats_np(node, ctx, x):
    """:math:`[\\mu; \\sigma^2]` per channel over every loop index, sample and pixel."""
    mu, var = _moments(x, _lead(node.inputs[0], ctx.in_axes[0]))
    return np.concatenate([mu, var])


def _stats_vjp(node, g):
    (x,) = node.inputs
    c = _channels(x)
    d = sub(x, reshape(slice_features(node, 0, c), (c,) + (1,) * (len(x.shape) - 1)))
    dmu, dvar = slice_features(g, 0, c), slice_features(g, c, 2 * c)
    return (add(channel_spread(dmu, x), mul(mul(2.0, d), channel_spread(dvar, x))),)


register("bn_stats", _stats_shape, bn_stats_np, _stats_vjp, axes=shared_axes, aligned=False)


def bn_stats(x):
    """Batch statistics per channel (first feature dim), :math:`[\\mu_c; \\sigma^2_c]` of shape ``(2C,)``:
    :math:`\\mu_c = \\frac1N \\sum x_{\\dots c \\dots}`, :math:`\\sigma^2_c = \\frac1N \\sum (x - \\mu_c)^2`
    over every loop index, sample and remaining feature dim (shared by every sample)."""
    return make("bn_stats", [x])


# ----------------------------------------------------------------------------- batch_norm
def _check_vectors(op, inputs, c, stats, vectors) -> None:
    for v in stats:
        if v.shape != (2 * c,) or v.axes or v.batched:
            raise shape_error(op, inputs, f"{v.label()} should be shared per-channel pairs [mean; var] (or sums), "
                                          f"shape ({2 * c},)")
    for v in vectors:
        if v.shape != (c,) or v.axes or v.batched:
            raise shape_error(op, inputs, f"{v.label()} should be one shared value per channel, shape ({c},)")


def _norm_shape(inputs, attrs):
    x = inputs[0]
    if not x.shape:
        raise shape_error("batch_norm", inputs, "needs a channel dimension (C, ...)")
    if len(inputs) not in (2, 4):
        raise shape_error("batch_norm", inputs, "takes x, stats and optionally gamma, beta")
    _check_vectors("batch_norm", inputs, _channels(x), inputs[1:2], inputs[2:])
    return x.shape, "float"


def _affine(lead, arr, vecs):
    if len(vecs) == 2:
        return _channel_view(arr, lead, vecs[0]), _channel_view(arr, lead, vecs[1])
    return 1.0, 0.0


def batch_norm_np(node, x, s, *gamma_beta):
    """:math:`y = \\gamma (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} + \\beta` with the given statistics."""
    lead, c = node.lead, _channels(node)
    mu, var = _channel_view(x, lead, s[..., :c]), _channel_view(x, lead, s[..., c:])
    gamma, beta = _affine(lead, x, gamma_beta)
    return (x - mu) / np.sqrt(var + node.attr("eps")) * gamma + beta


def _norm_vjp(node, g):
    x, s, *gamma_beta = node.inputs
    c, eps = _channels(x), node.attr("eps")
    sums = make("bn_sums", [g, x, s], eps=eps)
    dx = make("bn_input_grad", [g, x, s, sums] + gamma_beta[:1], eps=eps)
    if not gamma_beta:
        return dx, None
    return dx, None, slice_features(sums, c, 2 * c), slice_features(sums, 0, c)


register("batch_norm", _norm_shape, batch_norm_np, _norm_vjp)


def _same(a, b) -> bool:
    """The same value: one node, or two nodes of the same op and attributes over the same inputs (a DSL handle
    gives a fresh reference node at each use)."""
    return a is b or (a.op == b.op and a.attrs == b.attrs and a.shape == b.shape and a.axes == b.axes
                      and a.batched == b.batched and len(a.inputs) == len(b.inputs)
                      and all(i is j for i, j in zip(a.inputs, b.inputs)))


def batch_norm(x, stats, gamma=None, beta=None, eps: float = 1e-5):
    """:math:`y = \\gamma (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} + \\beta` per channel, with ``stats`` =
    :func:`bn_stats` ``(x)`` (see the module docstring for why it is an input). ``gamma``/``beta``: both or
    neither."""
    x, stats = as_node(x), as_node(stats)
    if stats.op != "bn_stats" or not _same(stats.inputs[0], x):
        raise GraphError(f"batch_norm({x.label()}): the statistics must be bn_stats({x.label()}) of the same value, "
                         f"got {stats.label()} (op {stats.op!r}) at {user_line()}")
    if (gamma is None) != (beta is None):
        raise GraphError(f"batch_norm({x.label()}): give both gamma and beta, or neither (at {user_line()})")
    extra = [] if gamma is None else [gamma, beta]
    return make("batch_norm", [x, stats] + extra, eps=float(eps))


# ----------------------------------------------------------------------------- backward
def _sums_shape(inputs, attrs):
    g, x, s = inputs
    if g.shape != x.shape or not x.shape:
        raise shape_error("bn_sums", inputs, "the adjoint and the input should have the same (C, ...) shape")
    _check_vectors("bn_sums", inputs, _channels(x), inputs[2:], ())
    return (2 * _channels(x),), "float"


def bn_sums_np(node, ctx, g, x, s):
    """:math:`[\\sum g; \\sum g \\hat x]` per channel."""
    gn, xn = node.inputs[:2]
    g = align(g, ctx.in_axes[0], gn.batched, ctx.in_axes[1], xn.batched)
    lead, c = _lead(xn, ctx.in_axes[1]), _channels(xn)
    xhat = (x - _channel_view(x, lead, s[:c])) / np.sqrt(_channel_view(x, lead, s[c:]) + node.attr("eps"))
    red = tuple(k for k in range(x.ndim) if k != lead)
    g = np.broadcast_to(g, x.shape)
    return np.concatenate([g.sum(axis=red), (g * xhat).sum(axis=red)])


def _input_grad_shape(inputs, attrs):
    g, x = inputs[:2]
    if g.shape != x.shape or not x.shape:
        raise shape_error("bn_input_grad", inputs, "the adjoint and the input should have the same (C, ...) shape")
    masked = bool(attrs.get("mask"))
    if masked and (len(inputs) < 5 or inputs[-1].shape != x.shape or inputs[-1].axes != x.axes
                   or inputs[-1].batched != x.batched):
        raise shape_error("bn_input_grad", inputs, "mask=True needs a last input z of the input's shape and axes")
    _check_vectors("bn_input_grad", inputs, _channels(x), inputs[2:4], inputs[4:len(inputs) - masked])
    return x.shape, "float"


def bn_input_grad_np(node, g, x, s, sums, *rest):
    """:math:`\\bar x = \\gamma r (g - \\sum g / N - \\hat x \\sum (g \\hat x) / N)`, times :math:`[z > 0]`
    with ``mask=True`` (its last input ``z``), as ``mul(bn_input_grad(...), positive(z))``."""
    masked = bool(node.attr("mask"))
    gamma = rest[:len(rest) - masked]
    lead, c = node.lead, _channels(node)
    g, x = np.broadcast_arrays(g, x)
    count = x.size // c
    r = 1.0 / np.sqrt(_channel_view(x, lead, s[..., c:]) + node.attr("eps"))
    xhat = (x - _channel_view(x, lead, s[..., :c])) * r
    k = _channel_view(x, lead, gamma[0]) * r if gamma else r
    sum_g, sum_gx = _channel_view(x, lead, sums[..., :c]), _channel_view(x, lead, sums[..., c:])
    out = k * (g - sum_g / count - xhat * sum_gx / count)
    return out * (rest[-1] > 0).astype(out.dtype) if masked else out


def _no_second(node, g):
    raise GraphError(f"{node.op} ({node.label()} at {node.where}): second derivatives of batch_norm are not "
                     f"supported")


register("bn_sums", _sums_shape, bn_sums_np, _no_second, axes=shared_axes, aligned=False)
register("bn_input_grad", _input_grad_shape, bn_input_grad_np, _no_second)
