"""Layer normalisation over the last feature dim, with a gain and a bias.

Meaning, for each sample and step (``x`` of feature shape ``(..., D)``, ``gain`` and ``bias`` of shape ``(D,)``)::

    mu = mean(x[..., :]);  var = mean((x[..., :] - mu) ** 2)
    y[..., :] = (x[..., :] - mu) / sqrt(var + eps) * gain + bias

Its VJP is built from rnnc ops (feature means and broadcasts), so its gradient is a graph like any other.
"""
from __future__ import annotations

import numpy as np

from rnnc.ops.elementwise import sqrt
from rnnc.ops.reduce import expand, fmean, sum_to
from rnnc.ops.registry import make, register, shape_error


def _shape(inputs, attrs):
    x, gain, bias = inputs
    if not x.shape:
        raise shape_error("layer_norm", inputs, "needs a feature dimension")
    want = (x.shape[-1],)
    if gain.shape != want or bias.shape != want:
        raise shape_error("layer_norm", inputs, f"gain and bias must have shape {want}, the last feature dim")
    if not attrs["eps"] > 0:
        raise shape_error("layer_norm", inputs, f"eps must be positive, got {attrs['eps']!r}")
    return x.shape, "float"


def _np(node, x, gain, bias):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)
    return xc / np.sqrt(var + node.attr("eps")) * gain + bias


def _vjp(node, g):
    x, gain, bias = node.inputs

    def spread(v):
        return expand(v, x.shape, -1)
    xc = x - spread(fmean(x, -1))
    rstd = spread(1.0 / sqrt(fmean(xc * xc, -1) + node.attr("eps")))
    xhat = xc * rstd
    gy = g * gain
    dx = rstd * (gy - spread(fmean(gy, -1)) - xhat * spread(fmean(gy * xhat, -1)))
    return dx, sum_to(g * xhat, gain), sum_to(g, bias)


register("layer_norm", _shape, _np, _vjp, row_local=True, cuda_reuses_cpu=True)


def layer_norm(x, gain, bias, eps: float = 1e-5):
    """:math:`y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\odot \\mathrm{gain} + \\mathrm{bias}`, with
    :math:`\\mu, \\sigma^2` the mean and variance of ``x`` over its last feature dim (per sample and step);
    ``gain`` and ``bias`` have that dim's size."""
    return make("layer_norm", [x, gain, bias], eps=float(eps))
