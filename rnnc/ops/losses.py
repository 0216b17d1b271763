"""Per-step, per-sample losses. ``Model.loss`` sums them over loop axes and averages over the batch."""
from __future__ import annotations

import numpy as np

from rnnc.ops.elementwise import log
from rnnc.ops.reduce import expand, fsum, sum_to
from rnnc.ops.registry import as_node, make, register, shape_error
from rnnc.ops.structure import log_softmax, one_hot, softmax


def _ce_shape(inputs, attrs):
    logits, target = inputs
    if len(logits.shape) != 1:
        raise shape_error("softmax_cross_entropy", inputs, "expects logits of shape (classes,)")
    if target.dtype == "int" and target.shape != ():
        raise shape_error("softmax_cross_entropy", inputs, "an integer target is one class index, shape ()")
    if target.dtype == "float" and target.shape != logits.shape:
        raise shape_error("softmax_cross_entropy", inputs, "a float target must have the logits' shape")
    return (), "float"


def _ce_np(node, logits, target):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    if node.inputs[1].dtype == "int":
        idx = np.broadcast_to(target, logp.shape[:-1]).astype(np.int64)[..., None]
        return -np.take_along_axis(np.broadcast_to(logp, idx.shape[:-1] + logp.shape[-1:]), idx, -1)[..., 0]
    return -(target * logp).sum(-1)


def _ce_vjp(node, g):
    logits, target = node.inputs
    ge = expand(g, logits.shape, -1)
    if target.dtype == "int":
        return sum_to(ge * (softmax(logits) - one_hot(target, logits.shape[0])), logits), None
    p = softmax(logits) * expand(fsum(target, -1), logits.shape, -1)
    return sum_to(ge * (p - target), logits), sum_to(-(ge * log_softmax(logits)), target)


def _ce_indexes(node):
    return [(1, node.inputs[0].shape[0] - 1, "class label of softmax_cross_entropy")] \
        if node.inputs[1].dtype == "int" else []


register("softmax_cross_entropy", _ce_shape, _ce_np, _ce_vjp, cuda_reuses_cpu=True, indexes=_ce_indexes)


def _pair_shape(op):
    def rule(inputs, attrs):
        a, b = inputs
        if a.shape != b.shape:
            raise shape_error(op, inputs, "prediction and target shapes differ")
        return (), "float"
    return rule


def _bce_np(node, p, y):
    p, y = np.broadcast_arrays(p, y)
    lead = node.lead
    axes = tuple(range(lead, p.ndim))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(axes)


def _bce_vjp(node, g):
    p, y = node.inputs
    ge = expand(g, p.shape)
    return sum_to(ge * (p - y) / (p * (1.0 - p)), p), sum_to(ge * (log(1.0 - p) - log(p)), y)


def _mse_np(node, a, b):
    d = a - b
    return (d * d).mean(tuple(range(node.lead, d.ndim))) if d.ndim > node.lead else d * d


def _mse_vjp(node, g):
    a, b = node.inputs
    n = float(np.prod(a.shape)) if a.shape else 1.0
    d = expand(g, a.shape) * (a - b) * (2.0 / n)
    return sum_to(d, a), sum_to(-d, b)


register("binary_cross_entropy", _pair_shape("binary_cross_entropy"), _bce_np, _bce_vjp, cuda_reuses_cpu=True)
register("mse", _pair_shape("mse"), _mse_np, _mse_vjp, cuda_reuses_cpu=True)


def softmax_cross_entropy(logits, target):
    """:math:`-\\log \\mathrm{softmax}(o)_y` for a class index ``y`` (int), or
    :math:`-\\sum_k y_k \\log \\mathrm{softmax}(o)_k` for a one-hot / probability target (float)."""
    return make("softmax_cross_entropy", [logits, target])


def binary_cross_entropy(p, y):
    """:math:`-\\sum_k y_k \\log p_k + (1 - y_k) \\log(1 - p_k)` for probabilities ``p``."""
    return make("binary_cross_entropy", [p, y])


def mse(prediction, target):
    """Mean over features of :math:`(a - b)^2`."""
    return make("mse", [as_node(prediction), as_node(target)])
