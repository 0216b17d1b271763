"""CPU templates of the embedding lookup and its scatter-add gradient (:mod:`rnnc.ops.embedding`).

The indices are range-checked at the runtime boundary before the kernel runs, so the loops index the table
directly.
"""
from __future__ import annotations

from rnnc.backends.cpu.emit import feat_ranges


def t_embedding(r, node) -> None:
    """:math:`y[\\dots, j] = E[\\mathrm{idx}[\\dots], j]`: one loop nest over the node's index space."""
    table, idx = node.inputs
    tb, ib = r.buf(table), r.buf(idx)
    r.fill_loops(node, r.out(node), lambda e, f: tb.at(e, [ib.at(e, []), f[0]]))


def t_embedding_grad(r, node) -> None:
    """:math:`dE = 0`, then :math:`dE[\\mathrm{idx}[\\dots], j] \\mathrel{+}= g[\\dots, j]` over every sample and step
    of ``g``."""
    g, idx = node.inputs
    out = r.out(node)
    r.fill_loops(node, out, lambda e, f: "F(0.0)")
    dims = r.space(g)
    env = r.env(dims)
    (j, _), = feat_ranges(g.shape)
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(g.shape)):
        r.em.line(f"{out.at(env, [r.buf(idx).at(env, []), j])} += {r.buf(g).at(env, [j])}")


TEMPLATES = {"embedding": t_embedding, "embedding_grad": t_embedding_grad}
