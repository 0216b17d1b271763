"""CUDA templates of the batch-normalisation ops (:mod:`rnnc.ops.batchnorm`).

A per-channel sum runs in two parallel stages, as the other reductions over every row (see
:mod:`rnnc.backends.cuda.ops_image`): one thread per (row, channel) sums its row's pixels into a scratch
buffer, then one thread per channel adds the rows up, in float64. The statistics take two such rounds (the
mean, then the centred squares), and so do ``bn_sums`` (``sum g``, then ``sum g (x - mu)``). ``batch_norm`` and
``bn_input_grad`` write each element once: the CPU's plain loop nests, one thread per element.
"""
from __future__ import annotations

from rnnc.backends.cpu.emit import feat_ranges
from rnnc.backends.cpu.ops_batchnorm import count_of, input_grad_loops, inv_of, normalise_loops
from rnnc.backends.cpu.ops_image import _whole
from rnnc.backends.cuda.ops_image import _partials


def _channel_rounds(r, node, x, terms) -> None:
    """For each ``(term, store)`` in turn: ``acc64 = sum of term(env, feats)`` over channel ``c_``'s elements
    (rows, then pixels), then ``store(acc64)`` lines, in one thread per channel."""
    dims = r.space(x)
    env = r.env(dims)
    rest = feat_ranges(x.shape[1:], "q")
    feats = ["c_"] + [v for v, _ in rest]
    part = _partials(r, node, dims, (x.shape[0],))
    for term, store in terms:
        with r.em.loops(r.lead_ranges(dims) + [("c_", str(x.shape[0]))]):
            r.em.line("acc64 = 0.0")
            with r.em.loops(rest):
                r.em.line(f"acc64 += {term(env, feats)}")
            r.em.line(f"{part.at(env, ['c_'])} = acc64")
        with r.em.loops([("c_", str(x.shape[0]))]):
            r.em.line("acc64 = 0.0")
            with r.em.loops(r.lead_ranges(dims)):
                r.em.line(f"acc64 += {part.at(env, ['c_'])}")
            for line in store("acc64"):
                r.em.line(line)


def t_bn_stats(r, node) -> None:
    """:math:`[\\mu; \\sigma^2]`: the mean, then the mean of the centred squares."""
    (x,) = node.inputs
    _whole(r, node)
    out, xb, c, n = r.out(node), r.buf(x), x.shape[0], count_of(r, x)
    mean = out.at({}, ["c_"])
    _channel_rounds(r, node, x, [
        (lambda e, f: xb.at(e, f), lambda a: [f"{mean} = {a} / ({n})"]),
        (lambda e, f: f"({xb.at(e, f)} - {mean}) * ({xb.at(e, f)} - {mean})",
         lambda a: [f"{out.at({}, [f'{c} + c_'])} = {a} / ({n})"]),
    ])


def t_bn_sums(r, node) -> None:
    """:math:`[\\sum g; \\sum g \\hat x]`."""
    g, x, s = node.inputs
    _whole(r, node)
    out, gb, xb, sb, c = r.out(node), r.buf(g), r.buf(x), r.buf(s), x.shape[0]
    inv = inv_of(r, s, {}, "c_", node.attr("eps"))
    _channel_rounds(r, node, x, [
        (lambda e, f: gb.at(e, f), lambda a: [f"{out.at({}, ['c_'])} = {a}"]),
        (lambda e, f: f"{gb.at(e, f)} * ({xb.at(e, f)} - {sb.at(e, ['c_'])})",
         lambda a: [f"{out.at({}, [f'{c} + c_'])} = {a} * {inv}"]),
    ])


TEMPLATES = {"bn_stats": t_bn_stats, "batch_norm": normalise_loops, "bn_sums": t_bn_sums,
             "bn_input_grad": input_grad_loops}
