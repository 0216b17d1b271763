"""Elementwise ops: arithmetic with broadcasting, activations, ``where``.

Features broadcast as in numpy (aligned to the right); loop axes and batch broadcast by name.
"""
from __future__ import annotations

import numpy as np

from rnnc.ops import scalar as S
from rnnc.ops.layout import pad_features
from rnnc.ops.reduce import sum_to
from rnnc.ops.registry import float_dtype, make, register, shape_error


def _broadcast_shape(op):
    def rule(inputs, attrs):
        try:
            shape = np.broadcast_shapes(*(n.shape for n in inputs))
        except ValueError:
            raise shape_error(op, inputs, "feature shapes do not broadcast") from None
        return shape, float_dtype(inputs) if op != "where" else float_dtype(inputs[1:])
    return rule


def _binary(fn):
    return lambda node, a, b: fn(*pad_features([a, b], node.lead))


def _unary(fn):
    return lambda node, a: fn(a)


def _sum_to(g, like):
    return sum_to(g, like)


def _vjp_add(node, g):
    return _sum_to(g, node.inputs[0]), _sum_to(g, node.inputs[1])


def _vjp_sub(node, g):
    return _sum_to(g, node.inputs[0]), _sum_to(-g, node.inputs[1])


def _vjp_mul(node, g):
    a, b = node.inputs
    return _sum_to(g * b, a), _sum_to(g * a, b)


def _vjp_div(node, g):
    a, b = node.inputs
    return _sum_to(g / b, a), _sum_to(-(g * node) / b, b)


def _sigmoid(x):
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _where(node, c, a, b):
    c, a, b = pad_features([c, a, b], node.lead)
    return np.where(c != 0, a, b)


def _vjp_where(node, g):
    c, a, b = node.inputs
    zero = 0.0
    return None, _sum_to(where(c, g, zero), a), _sum_to(where(c, zero, g), b)


# name -> (numpy, VJP, scalar form, arithmetic: cheap enough to recompute in a scan)
_BINARY = {
    "add": (np.add, _vjp_add, lambda a, b: a + b, True),
    "sub": (np.subtract, _vjp_sub, lambda a, b: a - b, True),
    "mul": (np.multiply, _vjp_mul, lambda a, b: a * b, True),
    "div": (np.divide, _vjp_div, lambda a, b: a / b, False),
}
for _name, (_fn, _vjp, _form, _cheap) in _BINARY.items():
    register(_name, _broadcast_shape(_name), _binary(_fn), _vjp, elementwise=True, scalar_cpu=_form,
             arithmetic=_cheap)

_UNARY = {
    "neg": (np.negative, lambda n, g: (-g,), lambda x: -x, True),
    "exp": (np.exp, lambda n, g: (g * n,), S.exp, False),
    "log": (np.log, lambda n, g: (g / n.inputs[0],), S.log, False),
    "tanh": (np.tanh, lambda n, g: (g * (1.0 - n * n),), S.tanh, False),
    "sigmoid": (_sigmoid, lambda n, g: (g * (n * (1.0 - n)),), S.sigmoid, False),
    # relu'(x) = [x > 0] = [relu(x) > 0]: read off the output, which the next layer keeps anyway, so a
    # pre-activation that only fed the relu (a conv's bias add) fuses into it and is never stored
    "relu": (lambda x: np.maximum(x, 0), lambda n, g: (g * positive(n),), lambda x: S.where(x > 0.0, x, 0.0),
             False),
    "sqrt": (np.sqrt, lambda n, g: (g / (2.0 * n),), S.sqrt, False),
    "square": (np.square, lambda n, g: (g * (2.0 * n.inputs[0]),), lambda x: x * x, True),
    "positive": (lambda x: (x > 0).astype(x.dtype), lambda n, g: (None,), lambda x: S.where(x > 0.0, 1.0, 0.0),
                 True),
}
for _name, (_fn, _vjp, _form, _cheap) in _UNARY.items():
    register(_name, _broadcast_shape(_name), _unary(_fn), _vjp, elementwise=True, scalar_cpu=_form,
             arithmetic=_cheap, differentiable=_name != "positive")
register("where", _broadcast_shape("where"), _where, _vjp_where, elementwise=True, scalar_cpu=S.where)


def add(a, b):
    """:math:`a + b`, broadcasting."""
    return make("add", [a, b])


def sub(a, b):
    """:math:`a - b`, broadcasting."""
    return make("sub", [a, b])


def mul(a, b):
    """:math:`a \\odot b`, broadcasting."""
    return make("mul", [a, b])


def div(a, b):
    """:math:`a / b`, broadcasting."""
    return make("div", [a, b])


def neg(a):
    """:math:`-a`."""
    return make("neg", [a])


def exp(x):
    """:math:`e^x`."""
    return make("exp", [x])


def log(x):
    """Natural logarithm."""
    return make("log", [x])


def tanh(x):
    """:math:`\\tanh x`."""
    return make("tanh", [x])


def sigmoid(x):
    """:math:`\\sigma(x) = 1 / (1 + e^{-x})`."""
    return make("sigmoid", [x])


def relu(x):
    """:math:`\\max(x, 0)`."""
    return make("relu", [x])


def sqrt(x):
    """:math:`\\sqrt{x}`."""
    return make("sqrt", [x])


def square(x):
    """:math:`x^2`."""
    return make("square", [x])


def positive(x):
    """:math:`[x > 0]` as 0.0 / 1.0 (no gradient)."""
    return make("positive", [x])


def where(cond, a, b):
    """``a`` where ``cond`` is nonzero, else ``b`` (elementwise, broadcasting)."""
    return make("where", [cond, a, b])
