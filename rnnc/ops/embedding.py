"""Embedding lookups: ``E[idx]``, row ``idx`` of a table, and its scatter-add gradient.

Meaning, per sample and step::

    y[..., :] = E[idx[...], :]                       # embedding(E, idx)
    dE = zeros(V, D);  for every sample and step:  dE[idx[...], :] += g[..., :]      # embedding_grad

Indices are integer values from the caller; each call checks them at the runtime boundary
(``0 <= idx < V``, :mod:`rnnc.interpret.boundary`), so kernels never read outside the table.
"""
from __future__ import annotations

import numpy as np

from rnnc.ops.layout import align
from rnnc.ops.registry import make, register, shape_error, shared_axes


def _embedding_shape(inputs, attrs):
    table, idx = inputs
    if len(table.shape) != 2 or table.axes or table.batched:
        raise shape_error("embedding", inputs, "the table is a matrix (rows, features) without loop axes or batch, "
                                               "such as a param")
    if idx.dtype != "int" or idx.shape != ():
        raise shape_error("embedding", inputs, f"{idx.label()} must be one integer index per sample and step "
                                               "(an input with dtype='int')")
    return table.shape[1:], "float"


def _embedding_np(node, table, idx):
    rows = table.reshape(table.shape[-2:])
    return rows[idx.astype(np.int64)]


def _embedding_vjp(node, g):
    table, idx = node.inputs
    return make("embedding_grad", [g, idx], rows=table.shape[0]), None


register("embedding", _embedding_shape, _embedding_np, _embedding_vjp, axes=lambda i, a: (i[1].axes, i[1].batched),
         row_local=True, cuda_reuses_cpu=True,
         indexes=lambda n: [(1, n.inputs[0].shape[0] - 1, "row index of embedding")])


def _grad_np(node, ctx, g, idx):
    gn, xn = node.inputs
    idx = align(idx, ctx.in_axes[1], xn.batched, ctx.in_axes[0], gn.batched)
    idx = np.broadcast_to(idx, g.shape[:-1])
    out = np.zeros(node.shape, dtype=g.dtype)
    np.add.at(out, idx.reshape(-1).astype(np.int64), g.reshape(-1, g.shape[-1]))
    return out


register("embedding_grad", lambda i, a: ((a["rows"],) + i[0].shape, "float"), _grad_np,
         lambda n, g: (embedding(g, n.inputs[1]), None), axes=shared_axes, aligned=False,
         indexes=lambda n: [(1, n.attr("rows") - 1, "row index of embedding")])


def embedding(table, idx):
    """Row ``idx`` of ``table``: :math:`y = E_{\\mathrm{idx}, :}` for each sample and step.

    ``table`` is a ``(V, D)`` matrix without loop axes (a param); ``idx`` an integer value (an input with
    ``dtype='int'``) in ``0 .. V - 1``, checked at each call. The gradient scatter-adds into the rows read:
    :math:`\\partial L/\\partial E_v = \\sum_{\\mathrm{idx} = v} \\partial L/\\partial y`.
    """
    return make("embedding", [table, idx])
