"""Matrix products: ``W @ x`` (a matrix times each sample's vector), its transpose and the outer-product sum
that is the weight gradient.
"""
from __future__ import annotations

import numpy as np

from rnnc.ops.layout import align
from rnnc.ops.reduce import sum_to
from rnnc.ops.registry import make, register, shape_error


def _matmul_shape(inputs, attrs):
    a, b = inputs
    if len(a.shape) != 2 or len(b.shape) not in (1, 2):
        raise shape_error("matmul", inputs, "expects a matrix (M, N) @ a vector (N,) or a matrix (N, K)")
    if a.shape[1] != b.shape[0]:
        raise shape_error("matmul", inputs, f"inner sizes differ: {a.shape[1]} vs {b.shape[0]}")
    return a.shape[:1] + b.shape[1:], "float"


def _matmul_np(node, a, b):
    lead = node.lead
    if b.ndim - lead == 1:
        if all(s == 1 for s in a.shape[:lead]):
            mat = a.reshape(a.shape[lead:])
            return b @ mat.T
        return np.einsum("...mn,...n->...m", a, b)
    return np.matmul(a, b)


def _matmul_vjp(node, g):
    a, b = node.inputs
    if len(b.shape) == 1:
        ga = outer_sum(g, b, like=a)
    else:
        ga = sum_to(matmul(g, transpose(b)), a)
    return ga, sum_to(matmul(transpose(a), g), b)


def _matmul_flops(node) -> int:
    """``(M, N) @ (N,)`` or ``(N, K)``: :math:`2 M N K` (K = 1 for a vector)."""
    a, b = node.inputs
    return 2 * a.shape[0] * a.shape[1] * (b.shape[1] if len(b.shape) == 2 else 1)


register("matmul", _matmul_shape, _matmul_np, _matmul_vjp, row_local=True, flops=_matmul_flops)


def _transpose_shape(inputs, attrs):
    (a,) = inputs
    if len(a.shape) != 2:
        raise shape_error("transpose", inputs, "expects a matrix")
    return a.shape[::-1], a.dtype


register("transpose", _transpose_shape, lambda n, a: np.swapaxes(a, -1, -2),
         lambda n, g: (transpose(g),), cuda_reuses_cpu=True)


def _outer_axes(inputs, attrs):
    return attrs["axes"], attrs["batched"]


def _outer_np(node, ctx, g, b):
    """Sum over the lead dims the target lacks of ``g[..., :, None] * b[..., None, :]``."""
    gn, bn = node.inputs
    union = ctx.in_axes[0] if len(ctx.in_axes[0]) >= len(ctx.in_axes[1]) else ctx.in_axes[1]
    batched = gn.batched or bn.batched
    g = align(g, ctx.in_axes[0], gn.batched, union, batched)
    b = align(b, ctx.in_axes[1], bn.batched, union, batched)
    lead = len(union) + int(batched)
    sizes = np.broadcast_shapes(g.shape[:lead], b.shape[:lead])
    if not ctx.out_axes and not node.batched:
        gm = np.broadcast_to(g, sizes + g.shape[lead:]).reshape(-1, g.shape[-1])
        bm = np.broadcast_to(b, sizes + b.shape[lead:]).reshape(-1, b.shape[-1])
        return gm.T @ bm
    full = np.einsum("...m,...n->...mn", g, b)
    drop = [k for k, a in enumerate(union) if a not in ctx.out_axes]
    if batched and not node.batched:
        drop.append(len(union))
    out = full.sum(tuple(drop), keepdims=True)
    keep = tuple(out.shape[k] for k in range(lead) if k not in drop)
    return out.reshape(keep + node.shape)


def _outer_vjp(node, g):
    gn, bn = node.inputs
    return sum_to(matmul(g, bn), gn), sum_to(matmul(transpose(g), gn), bn)


register("outer_sum", lambda i, a: ((i[0].shape[0], i[1].shape[0]), "float"), _outer_np, _outer_vjp,
         axes=_outer_axes, aligned=False, flops=lambda n: 2 * n.shape[0] * n.shape[1])


def matmul(a, b):
    """Matrix product :math:`A x` for each sample (and step): ``(M, N) @ (N,) -> (M,)``.

    ``(M, N) @ (N, K) -> (M, K)`` works too.
    """
    return make("matmul", [a, b])


def transpose(a):
    """:math:`A^T` of a matrix-valued node."""
    return make("transpose", [a])


def outer_sum(g, b, like):
    """:math:`\\sum g\\, b^T` over every loop axis and batch sample that ``like`` does not have."""
    return make("outer_sum", [g, b], axes=like.axes, batched=like.batched)
