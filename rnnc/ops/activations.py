"""Elementwise ops added through the public extension API (:func:`rnnc.register_op`), as a user would add them:
softplus, abs, minimum, maximum, pow and clip. Each is one call: scalar form, numpy reference, VJP.
"""
from __future__ import annotations

import numpy as np

from rnnc.ops import scalar as S
from rnnc.ops.elementwise import log, positive, sigmoid
from rnnc.ops.extend import register_op

# [a > b] as 0.0 / 1.0 (no gradient), the switch of the VJPs below
_above = positive


@register_op(numpy=lambda x: np.logaddexp(0.0, x), vjp=lambda g, y, x: g * sigmoid(x))
def softplus(x):
    """:math:`\\mathrm{softplus}(x) = \\log(1 + e^x)`, computed as :math:`\\max(x, 0) + \\log(1 + e^{-|x|})` (no
    overflow); its derivative is :math:`\\sigma(x)`."""
    return S.maximum(x, 0.0) + S.log1p(S.exp(-abs(x)))


@register_op("abs", numpy=np.abs, vjp=lambda g, y, x: g * (_above(x) - _above(-x)), arithmetic=True)
def absolute(x):
    """:math:`|x|`; its derivative is :math:`\\mathrm{sign}(x)` (0 at 0)."""
    return abs(x)


@register_op(numpy=np.maximum, arithmetic=True,
             vjp=lambda g, y, a, b: (g * _above(a - b), g * (1.0 - _above(a - b))))
def maximum(a, b):
    """:math:`\\max(a, b)`, broadcasting; the gradient goes to ``a`` where :math:`a > b`, else to ``b``."""
    return S.maximum(a, b)


@register_op(numpy=np.minimum, arithmetic=True,
             vjp=lambda g, y, a, b: (g * _above(b - a), g * (1.0 - _above(b - a))))
def minimum(a, b):
    """:math:`\\min(a, b)`, broadcasting; the gradient goes to ``a`` where :math:`a < b`, else to ``b``."""
    return S.minimum(a, b)


def _pow_vjp(g, y, a, b):
    return g * b * power(a, b - 1.0), g * y * log(a)


@register_op("pow", numpy=np.power, vjp=_pow_vjp)
def power(a, b):
    """:math:`a^b`, broadcasting; ``b`` may be a number (``pow(x, 3.0)``) or a value. The gradient is
    :math:`b\\,a^{b-1}` for ``a`` and :math:`a^b \\log a` for ``b`` (which needs :math:`a > 0`)."""
    return a ** b


def _clip_vjp(g, y, x, low, high):
    return g * (_above(x - low) * _above(high - x)), g * _above(low - x), g * _above(x - high)


@register_op(numpy=np.clip, vjp=_clip_vjp, arithmetic=True)
def clip(x, low, high):
    """:math:`\\min(\\max(x, \\mathrm{low}), \\mathrm{high})`; ``low`` and ``high`` are numbers or values. The
    gradient is 1 strictly between the bounds and 0 outside (it flows to the bound that holds)."""
    return S.minimum(S.maximum(x, low), high)
