"""Python's operators on IR nodes: ``a + b``, ``a - b``, ``a * b``, ``a / b``, ``-a``, ``A @ x`` and ``x[i]`` build
the ops :func:`add`, :func:`sub`, :func:`mul`, :func:`div`, :func:`neg`, :func:`matmul` and
:func:`feature_index`. They are attached to :class:`rnnc.ir.node.Node` here, when :mod:`rnnc.ops` is imported
(as ``jax.numpy`` attaches its array methods), so that the IR does not import the ops."""
from __future__ import annotations

from rnnc.ir.node import Node
from rnnc.ops.elementwise import add, div, mul, neg, sub
from rnnc.ops.linalg import matmul
from rnnc.ops.structure import feature_index


def _binary(op, doc: str):
    def forward(self, other):
        return op(self, other)

    def reflected(self, other):
        return op(other, self)

    forward.__doc__, reflected.__doc__ = doc, f"{doc} (reflected)"
    return forward, reflected


def attach() -> None:
    """Give :class:`Node` its operators (idempotent)."""
    for names, op in (("add", add), ("sub", sub), ("mul", mul), ("truediv", div), ("matmul", matmul)):
        forward, reflected = _binary(op, f"``{op.__name__}`` of two values")
        setattr(Node, f"__{names}__", forward)
        setattr(Node, f"__r{names}__", reflected)
    Node.__neg__ = lambda self: neg(self)
    Node.__getitem__ = lambda self, key: feature_index(self, key)


attach()
