"""A relu's gradient applied by the batch-norm input gradient before it (CPU pipeline).

``conv -> relu -> batch_norm`` differentiates to ``mul(bn_input_grad(g, x, s, sums, gamma), positive(x))``: the
batch norm's input is the relu's output ``x``, and the relu passes the adjoint where it is positive. As two ops
the adjoint map is written by the batch-norm kernel, then read again with ``x`` and written once more by a map
stage; as one, :math:`\\bar z = \\mathrm{bn\\_input\\_grad}(g, x, s, sums, \\gamma) [x > 0]` is written once
(``bn_input_grad(..., z, mask=True)``, :mod:`rnnc.ops.batchnorm`). The product is the same, to the bit: the
fused kernel multiplies the same value by the same 0 or 1.

It applies where the ``bn_input_grad`` node is read only by that product and the mask's operand has its shape
and axes.
"""
from __future__ import annotations

from rnnc.ir.graph import Graph, rebuild
from rnnc.ops import make
from rnnc.passes.common import remap, uses


def _same_layout(a, b) -> bool:
    return a.shape == b.shape and a.axes == b.axes and a.batched == b.batched and a.dtype == b.dtype


def mask_bn(graph: Graph) -> Graph:
    """``mul(bn_input_grad(...), positive(z))`` -> ``bn_input_grad(..., z, mask=True)`` (module docstring)."""
    count = uses(graph)

    def fn(node, inputs, mapping):
        if node.op != "mul" or len(node.inputs) != 2:
            return None
        for k in (0, 1):
            bn, pos = node.inputs[k], node.inputs[1 - k]
            if (bn.op == "bn_input_grad" and not bn.attr("mask") and count[bn] == 1 and pos.op == "positive"
                    and _same_layout(node, bn) and _same_layout(bn, pos) and _same_layout(pos, pos.inputs[0])):
                new_bn = mapping[bn]
                return make("bn_input_grad", [*new_bn.inputs, mapping[pos.inputs[0]]], where=node.where,
                            **{**bn.attrs, "mask": True})
        return None

    return remap(graph, rebuild(graph.roots(), fn))
