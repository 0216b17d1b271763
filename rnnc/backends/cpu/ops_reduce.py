"""CPU templates of reductions and broadcasts: over features, over a loop axis, over the batch.

Reductions zero their output, then accumulate in a loop nest over the input's index space (the reduced axis
outermost, features innermost, so the inner loop runs over contiguous memory).
"""
from __future__ import annotations

from rnnc.backends.cpu.emit import BATCH, feat_ranges
from rnnc.backends.cpu.ops_linalg import narrowed, parallel_here
from rnnc.backends.cpu.pieces import RunCall


def _zero(r, node, out) -> None:
    r.fill_loops(node, out, lambda env, f: "F(0.0)")


def _lengths(r, node):
    return r.buf(node.inputs[1]).at(r.env([BATCH]), []) if len(node.inputs) > 1 else None


# ----------------------------------------------------------------------------- features
def _feature_reduce(kind):
    def template(r, node) -> None:
        (x,) = node.inputs
        out = r.out(node)
        dims = r.space(node)
        env = r.env(dims)
        of = [v for v, _ in feat_ranges(node.shape)]
        inner = [(f"q{k}", str(s)) for k, s in enumerate(x.shape[len(node.shape):])]
        xf = of + [v for v, _ in inner]
        count = 1
        for _, s in inner:
            count *= int(s)
        with r.em.loops(r.lead_ranges(dims) + feat_ranges(node.shape)):
            r.em.line("acc = -math.inf" if kind == "max" else "acc = F(0.0)")
            with r.em.loops(inner):
                elem = r.buf(x).at(env, xf)
                r.em.line(f"acc = max(acc, {elem})" if kind == "max" else f"acc += {elem}")
            r.em.line(f"{out.at(env, of)} = acc" + (f" / F({float(count)!r})" if kind == "mean" else ""))
    return template


def t_max_mask(r, node) -> None:
    """1.0 at the first maximum over the reduced features (flat C order), 0.0 elsewhere."""
    (x,) = node.inputs
    out = r.out(node)
    dims = r.space(node)
    env = r.env(dims)
    keep = len(x.shape) - 1 if node.attr("axis") == -1 else 0
    outer = feat_ranges(x.shape)[:keep]
    inner = feat_ranges(x.shape)[keep:]
    feats = [v for v, _ in feat_ranges(x.shape)]
    with r.em.loops(r.lead_ranges(dims) + outer):
        r.em.line("best = -math.inf")
        with r.em.loops(inner):
            r.em.line(f"best = max(best, {r.buf(x).at(env, feats)})")
        r.em.line("hit = False")
        with r.em.loops(inner):
            with r.em.block(f"if not hit and {r.buf(x).at(env, feats)} == best:"):
                r.em.line(f"{out.at(env, feats)} = F(1.0)")
                r.em.line("hit = True")
            with r.em.block("else:"):
                r.em.line(f"{out.at(env, feats)} = F(0.0)")


def t_sum_to(r, node) -> None:
    """Unbroadcast: sum ``g`` over the axes, batch and feature dims ``node`` lacks."""
    (g,) = node.inputs
    out = r.out(node)
    if _rows_summed(r, node, g, out):
        return
    _zero(r, node, out)
    dims = r.space(g)
    env = r.env(dims)
    gf = [v for v, _ in feat_ranges(g.shape)]
    extra = len(g.shape) - len(node.shape)
    of = [("0" if s == 1 and g.shape[extra + k] != 1 else gf[extra + k]) for k, s in enumerate(node.shape)]
    ranges = r.lead_ranges(dims) + feat_ranges(g.shape)
    kept = [k >= extra and of[k - extra] != "0" for k in range(len(g.shape))]
    inner = len(kept) - next((k + 1 for k in range(len(kept) - 1, -1, -1) if kept[k]), 0)
    if not inner:
        with r.em.loops(ranges):
            r.em.line(f"{out.at(env, of)} += {r.buf(g).at(env, gf)}")
        return
    # the trailing feature dims are all summed (a per-channel sum over an image): add them up in a register,
    # then touch the output once, instead of a load and a store per element
    with r.em.loops(ranges[:len(ranges) - inner]):
        r.em.line("acc = F(0.0)")
        with r.em.loops(r.sized_by(ranges[len(ranges) - inner:], r.buf(g))):
            r.em.line(f"acc += {r.buf(g).at(env, gf)}")
        r.em.line(f"{out.at(env, of)} += acc")


def _rows_summed(r, node, g, out) -> bool:
    """A bias gradient, :math:`s = \\sum_r g_r` over every row (steps x batch) of a vector ``g``, at a map
    stage's top level: one ``lak.sum_rows`` call in row blocks on threads (a :class:`RunCall`, which
    ``row_groups`` runs chunk by chunk with the products reading the same rows, while they are in cache)."""
    gb = r.buf(g)
    if (r.dims(node) or len(node.shape) != 1 or tuple(g.shape) != tuple(node.shape) or not gb.dims
            or set(gb.dims) != set(r.dims(g)) or set(gb.dims) & set(r.fixed) or gb.literal is not None
            or narrowed(r, gb) or not parallel_here(r)):
        return False
    rows = " * ".join(r.size(d) for d in gb.dims)
    r.em.mark(RunCall("lak", "sum_rows", (f"{gb.var}.reshape(({rows}, {g.shape[0]}))", out.var),
                      reads=(gb.var,), writes=(out.var,), comment=r.em.tag, where=r.em.where))
    return True


# ----------------------------------------------------------------------------- loop axes
def _pick(which):
    def template(r, node) -> None:
        x, axis = node.inputs[0], node.attr("axis")
        n = r.size(axis)
        lens = _lengths(r, node)
        if which == "first":
            idx = "0"
        elif lens is not None:
            idx = f"min(max({lens} - 1, 0), {n} - 1)"
        else:
            idx = f"{n} - 1"

        def expr(env, feats):
            src = dict(env)
            src[axis] = idx
            return r.buf(x).at(src, feats)
        r.fill_loops(node, r.out(node), expr)
    return template


def _axis_sum(mean):
    def template(r, node) -> None:
        x, axis = node.inputs[0], node.attr("axis")
        out = r.out(node)
        lens = _lengths(r, node)
        _zero(r, node, out)
        dims = r.space(node)
        env = r.env(dims + [axis])
        feats = [v for v, _ in feat_ranges(node.shape)]
        with r.em.loops(r.lead_ranges([axis] + dims) + feat_ranges(node.shape)):
            line = f"{out.at(env, feats)} += {r.buf(x).at(env, feats)}"
            if lens is not None:
                with r.em.block(f"if {r.var(axis)} < {lens}:"):
                    r.em.line(line)
            else:
                r.em.line(line)
        if mean:
            denom = f"F({lens})" if lens is not None else f"F({r.size(axis)})"
            r.fill_loops(node, out, lambda e, f: f"{out.at(e, f)} / {denom}")
    return template


def t_spread(r, node) -> None:
    """:math:`y[t] = g` (``mode="mean"``: :math:`g / T`), masked past each sample's length."""
    g, axis = node.inputs[0], node.attr("axis")
    lens = _lengths(r, node)
    mean = node.attr("mode") == "mean"

    def expr(env, feats):
        val = r.read(g, env, feats, node.shape)
        if mean:
            val = f"{val} / F({lens if lens is not None else r.size(axis)})"
        if lens is not None:
            val = f"({val} if {env[axis]} < {lens} else F(0.0))"
        return val
    r.fill_loops(node, r.out(node), expr)


def t_at_index(r, node) -> None:
    """:math:`y[t] = g` at the picked index (0, the last, or each sample's last), 0 elsewhere."""
    g, axis = node.inputs[0], node.attr("axis")
    lens = _lengths(r, node)
    n = r.size(axis)
    if node.attr("which") == "first":
        idx = "0"
    elif lens is not None:
        idx = f"min(max({lens} - 1, 0), {n} - 1)"
    else:
        idx = f"{n} - 1"
    r.fill_loops(node, r.out(node),
                 lambda env, f: f"({r.read(g, env, f, node.shape)} if {env[axis]} == {idx} else F(0.0))")


def t_edge_sum(r, node) -> None:
    """:math:`\\sum g[t]` over the indices where a read at ``t + offset`` leaves the axis."""
    g, axis, off = node.inputs[0], node.attr("axis"), node.attr("offset")
    out = r.out(node)
    n = r.size(axis)
    _zero(r, node, out)
    dims = r.space(node)
    env = r.env(dims + [axis])
    feats = [v for v, _ in feat_ranges(node.shape)]
    k = f"min({abs(off)}, {n})"
    rng = f"range({k})" if off < 0 else f"range({n} - {k}, {n})"
    r.em.line(f"for {r.var(axis)} in {rng}:")
    r.em.depth += 1
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(node.shape)):
        r.em.line(f"{out.at(env, feats)} += {r.buf(g).at(env, feats)}")
    r.em.depth -= 1


# ----------------------------------------------------------------------------- batch
def t_batch_mean(r, node) -> None:
    (x,) = node.inputs
    out = r.out(node)
    _zero(r, node, out)
    dims = r.space(node)
    env = r.env(dims + [BATCH])
    feats = [v for v, _ in feat_ranges(node.shape)]
    with r.em.loops(r.lead_ranges([BATCH] + dims) + feat_ranges(node.shape)):
        r.em.line(f"{out.at(env, feats)} += {r.buf(x).at(env, feats)}")
    r.fill_loops(node, out, lambda e, f: f"{out.at(e, f)} / F(nb)")


def t_batch_spread(r, node) -> None:
    (g,) = node.inputs
    r.fill_loops(node, r.out(node), lambda e, f: f"{r.read(g, e, f, node.shape)} / F(nb)")


def t_to_batch(r, node) -> None:
    (g,) = node.inputs
    r.fill_loops(node, r.out(node), lambda e, f: r.read(g, e, f, node.shape))


def t_step_mask(r, node) -> None:
    """:math:`m[t, b] = [t < \\mathrm{len}_b]`."""
    lens = r.buf(node.inputs[0])
    axis = node.attr("axis")
    r.fill_loops(node, r.out(node), lambda e, f: f"(F(1.0) if {e[axis]} < {lens.at(e, [])} else F(0.0))")


def t_tbptt_mask(r, node) -> None:
    """Truncated-BPTT 0/1 step constant; the same formulas as :func:`rnnc.ops.leaves.tbptt_mask_values`."""
    a = node.attrs
    axis = a["axis"]
    u, n, k1, k2 = r.env([axis])[axis], r.size(axis), a["k1"], a["k2"]

    def start(c):
        return f"(min(({c} + 1) * {k1}, {n}) - {k2})"
    chunk = f"({u} // {k1})"
    last = f"(({n} - 1) // {k1})"
    if a["mode"] == "seed":
        cond = f"{u} >= {start(chunk)}"
    else:
        origin, dest = f"({chunk} + {a['src']})", f"({u} - {a['shift']})"
        if a["mode"] == "init":
            cond = f"{origin} <= {last} and {u} >= {start(origin)} and {dest} < 0"
        else:
            cond = (f"{origin} <= {last} and {dest} >= {start(origin)} and {dest} >= 0 and "
                    f"{origin} - max({dest}, 0) // {k1} == {a['dst']}")
    r.fill_loops(node, r.out(node), lambda e, f: f"(F(1.0) if {cond} else F(0.0))")


TEMPLATES = {
    "tbptt_mask": t_tbptt_mask,
    "fsum": _feature_reduce("sum"), "fmean": _feature_reduce("mean"), "fmax": _feature_reduce("max"),
    "max_mask": t_max_mask, "sum_to": t_sum_to, "last": _pick("last"), "first": _pick("first"),
    "asum": _axis_sum(False), "amean": _axis_sum(True), "spread": t_spread, "at_index": t_at_index,
    "edge_sum": t_edge_sum, "batch_mean": t_batch_mean, "batch_spread": t_batch_spread,
    "to_batch": t_to_batch, "step_mask": t_step_mask,
}
