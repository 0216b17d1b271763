"""CPU templates of feature-structure ops (concat, pad, reshape, one_hot, softmax, log_softmax) and losses.

Row-wise ops (softmax, losses) loop over the index space and every feature dim but the last, and run the
last dim as an inner loop per row.
"""
from __future__ import annotations

import numpy as np

from rnnc.backends.cpu.emit import feat_ranges


def t_concat(r, node) -> None:
    """:math:`y = [a; b; \\dots]` on the last feature dim: one copy loop per input."""
    out = r.out(node)
    dims = r.space(node)
    env = r.env(dims)
    start = 0
    for x in node.inputs:
        feats = [v for v, _ in feat_ranges(x.shape)]
        of = feats[:-1] + [f"{feats[-1]} + {start}" if start else feats[-1]]
        with r.em.loops(r.lead_ranges(dims) + feat_ranges(x.shape)):
            r.em.line(f"{out.at(env, of)} = {r.buf(x).at(env, feats)}")
        start += x.shape[-1]


def t_take_rows(r, node) -> None:
    """Rows ``[start, stop)`` of a matrix (the split of stacked weight gradients)."""
    (x,) = node.inputs
    start = node.attr("start")
    r.fill_loops(node, r.out(node), lambda e, f: r.buf(x).at(e, [f"{f[0]} + {start}"] + f[1:]))


def t_pad(r, node) -> None:
    (g,) = node.inputs
    out = r.out(node)
    start, stop = node.attr("start"), node.attr("start") + g.shape[-1]
    r.fill_loops(node, out, lambda e, f: f"({r.buf(g).at(e, f[:-1] + [f'{f[-1]} - {start}'])} "
                                         f"if {f[-1]} >= {start} and {f[-1]} < {stop} else F(0.0))")


def t_reshape(r, node) -> None:
    """Per-sample reshape in C order: the flat feature index is unchanged."""
    (x,) = node.inputs
    ostr = np.cumprod((1,) + tuple(node.shape[::-1]))[:-1][::-1] if node.shape else ()
    istr = np.cumprod((1,) + tuple(x.shape[::-1]))[:-1][::-1] if x.shape else ()

    def expr(env, feats):
        flat = " + ".join(f"{f} * {int(s)}" for f, s in zip(feats, ostr)) or "0"
        xf = [f"(({flat}) // {int(s)}) % {int(n)}" for s, n in zip(istr, x.shape)]
        return r.buf(x).at(env, xf)
    r.fill_loops(node, r.out(node), expr)


def t_one_hot(r, node) -> None:
    (y,) = node.inputs
    r.fill_loops(node, r.out(node), lambda e, f: f"(F(1.0) if {r.buf(y).at(e, f[:-1])} == {f[-1]} else F(0.0))")


def _rows(r, node, x):
    """(index dims, env, row feature vars, last-dim size) for a row-wise op on input ``x``."""
    dims = r.space(node)
    env = r.env(dims)
    rows = feat_ranges(x.shape)[:-1]
    return dims, env, [v for v, _ in rows], rows, x.shape[-1]


def _logsumexp(r, xb, env, rf, n) -> None:
    """Emit ``mx`` (row max) and ``lse`` (log-sum-exp) of row ``rf`` of ``xb``."""
    r.em.line("mx = -math.inf")
    with r.em.loops([("q", str(n))]):
        r.em.line(f"mx = max(mx, {xb.at(env, rf + ['q'])})")
    r.em.line("se = F(0.0)")
    with r.em.loops([("q", str(n))]):
        r.em.line(f"se += math.exp({xb.at(env, rf + ['q'])} - mx)")
    r.em.line("lse = mx + math.log(se)")


def _softmax(log):
    def template(r, node) -> None:
        (x,) = node.inputs
        out, xb = r.out(node), r.buf(x)
        dims, env, rf, rows, n = _rows(r, node, x)
        with r.em.loops(r.lead_ranges(dims) + rows):
            _logsumexp(r, xb, env, rf, n)
            with r.em.loops([("q", str(n))]):
                val = f"{xb.at(env, rf + ['q'])} - lse"
                r.em.line(f"{out.at(env, rf + ['q'])} = " + (val if log else f"math.exp({val})"))
    return template


def t_layer_norm(r, node) -> None:
    """Layer norm (:mod:`rnnc.ops.layernorm`) per row: the mean, then the variance, then the output, each an
    inner loop over the row (no row buffer)."""
    x, gain, bias = node.inputs
    out, xb = r.out(node), r.buf(x)
    dims, env, rf, rows, n = _rows(r, node, x)
    with r.em.loops(r.lead_ranges(dims) + rows):
        r.em.line("ln_m = F(0.0)")
        with r.em.loops([("q", str(n))]):
            r.em.line(f"ln_m += {xb.at(env, rf + ['q'])}")
        r.em.line(f"ln_m = ln_m / F({float(n)!r})")
        r.em.line("ln_v = F(0.0)")
        with r.em.loops([("q", str(n))]):
            r.em.line(f"ln_d = {xb.at(env, rf + ['q'])} - ln_m")
            r.em.line("ln_v += ln_d * ln_d")
        r.em.line(f"ln_r = F(1.0) / math.sqrt(ln_v / F({float(n)!r}) + F({float(node.attr('eps'))!r}))")
        with r.em.loops([("q", str(n))]):
            feats = rf + ["q"]
            r.em.line(f"{out.at(env, feats)} = ({xb.at(env, feats)} - ln_m) * ln_r * "
                      f"{r.read(gain, env, feats, node.shape)} + {r.read(bias, env, feats, node.shape)}")


def t_softmax_ce(r, node) -> None:
    """:math:`\\mathrm{lse}(o) - o_y` (class index) or :math:`-\\sum_k y_k (o_k - \\mathrm{lse}(o))`."""
    logits, target = node.inputs
    out, lb, tb = r.out(node), r.buf(logits), r.buf(target)
    dims, env, rf, rows, n = _rows(r, node, logits)
    with r.em.loops(r.lead_ranges(dims) + rows):
        _logsumexp(r, lb, env, rf, n)
        if target.dtype == "int":
            r.em.line(f"{out.at(env, rf)} = lse - {lb.at(env, rf + [tb.at(env, rf)])}")
        else:
            r.em.line("acc = F(0.0)")
            with r.em.loops([("q", str(n))]):
                r.em.line(f"acc -= {tb.at(env, rf + ['q'])} * ({lb.at(env, rf + ['q'])} - lse)")
            r.em.line(f"{out.at(env, rf)} = acc")


def _pair_loss(kind):
    def template(r, node) -> None:
        a, b = node.inputs
        out, ab, bb = r.out(node), r.buf(a), r.buf(b)
        dims = r.space(node)
        env = r.env(dims)
        inner = feat_ranges(a.shape)
        feats = [v for v, _ in inner]
        count = float(np.prod(a.shape)) if a.shape else 1.0
        with r.em.loops(r.lead_ranges(dims)):
            r.em.line("acc = F(0.0)")
            with r.em.loops(inner):
                p, y = ab.at(env, feats), bb.at(env, feats)
                if kind == "mse":
                    r.em.line(f"d = {p} - {y}")
                    r.em.line("acc += d * d")
                else:
                    r.em.line(f"acc -= {y} * math.log({p}) + (F(1.0) - {y}) * math.log(F(1.0) - {p})")
            r.em.line(f"{out.at(env, [])} = acc" + (f" / F({count!r})" if kind == "mse" else ""))
    return template


TEMPLATES = {
    "concat": t_concat, "take_rows": t_take_rows, "pad": t_pad, "reshape": t_reshape, "one_hot": t_one_hot,
    "softmax": _softmax(False), "log_softmax": _softmax(True), "softmax_cross_entropy": t_softmax_ce,
    "binary_cross_entropy": _pair_loss("bce"), "mse": _pair_loss("mse"), "layer_norm": t_layer_norm,
}
