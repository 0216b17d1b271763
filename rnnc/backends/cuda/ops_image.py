"""CUDA templates of the image ops (:mod:`rnnc.ops.image`): one thread per output element, loops inside.

The CPU forms (:mod:`rnnc.backends.cpu.ops_image`) run im2col + one BLAS call and scatter-add (``+=``) into
their outputs; neither exists on the device (no BLAS in a kernel, and a scatter-add from many threads races).
Here every op is a *gather*: the thread that owns an output element finds every term that lands on it and
sums them in a sequential inner loop, so each element is written exactly once. With ``k`` kernel, ``s``
stride, ``p`` padding, ``d`` dilation (output ``u`` reads input row :math:`y = s u + d a - p`)::

    conv2d              y[o, u, v]   = sum_{c, a, b} W[o, c, a, b] x[c, s u + d a - p, s v + d b - p]
    conv2d_input_grad   x̄[c, y, x]   = sum_{o, a, b} W[o, c, a, b] g[o, u, v]   where y = s u + d a - p ...
    conv2d_weight_grad  W̄[o, c, a, b] = sum_{rows} (sum_{u, v} g[o, u, v] x[c, s u + d a - p, s v + d b - p])
    maxpool2d_grad      x̄[c, y, x]   = sum of g[c, u, v] over the windows (u, v) whose first maximum is (y, x)
    avgpool2d_grad      x̄[c, y, x]   = sum of g[c, u, v] / (kh kw) over the windows (u, v) holding (y, x)
    channel_mean        mu[c]        = (1 / N) sum over rows (sum over the row's pixels)

The two reductions over every row (sample × loop index) run in two parallel stages: one thread per (row,
output element) writes a partial sum into a scratch buffer ``(rows..., *shape)``, then one thread per output
element adds the rows up.

Out-of-range input positions (zero padding) are skipped by bounds checks. Every read goes through
:meth:`~rnnc.backends.cpu.emit.Buf.at`, so broadcast inputs and scan-fixed indices need no special case.
``to_grid`` / ``from_grid`` and ``channel_spread``'s general path are already one write per element and are
reused from the CPU table (see :data:`rnnc.backends.cuda.ops.REUSED`).
"""
from __future__ import annotations

from rnnc.backends.cpu.emit import Buf, feat_ranges
from rnnc.backends.cpu.ops_image import _whole
from rnnc.backends.cpu.render import BufSpec


def _in(var: str, size: int) -> str:
    return f"{var} >= 0 and {var} < {size}"


def _inverse(r, out: str, pos: str, off: str, stride: int, size: int) -> None:
    """Lines setting ``out`` to the output index ``u`` with ``s u + off == pos`` (``-1`` when none in range)."""
    r.em.line(f"t_ = {pos} - ({off})")
    r.em.line(f"{out} = t_ // {stride} if t_ >= 0 and t_ % {stride} == 0 and t_ // {stride} < {size} else -1")


def _conv_attrs(node):
    return node.attr("stride"), node.attr("padding"), node.attr("dilation")


# ----------------------------------------------------------------------------- convolution
def t_conv2d(r, node) -> None:
    """:math:`y[o, u, v] = \\sum_{c, a, b} W[o, c, a, b]\\, x[c, s u + d a - p, s v + d b - p]`."""
    x, w = node.inputs
    out, xb, wb = r.out(node), r.buf(x), r.buf(w)
    (sh, sw), (ph, pw), (dh, dw) = _conv_attrs(node)
    o, c, kh, kw = w.shape
    _, h, wd = x.shape
    dims = r.space(node)
    env = r.env(dims)
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(node.shape, "f")):
        r.em.line("acc = F(0.0)")
        with r.em.loops([("c_", str(c)), ("a_", str(kh))]):
            r.em.line(f"y_ = {sh} * f1 + {dh} * a_ - {ph}")
            with r.em.block(f"if {_in('y_', h)}:"):
                with r.em.loops([("b_", str(kw))]):
                    r.em.line(f"x_ = {sw} * f2 + {dw} * b_ - {pw}")
                    with r.em.block(f"if {_in('x_', wd)}:"):
                        r.em.line(f"acc += {wb.at({}, ['f0', 'c_', 'a_', 'b_'])} * {xb.at(env, ['c_', 'y_', 'x_'])}")
        r.em.line(f"{out.at(env, ['f0', 'f1', 'f2'])} = acc")


def t_conv2d_input_grad(r, node) -> None:
    """:math:`\\bar x[c, y, x] = \\sum_{o, a, b} W[o, c, a, b]\\, g[o, u, v]` over the ``(a, b)`` whose
    output ``(u, v)`` (:math:`s u + d a - p = y`, likewise for ``x``) exists."""
    g, w = node.inputs
    out, gb, wb = r.out(node), r.buf(g), r.buf(w)
    (sh, sw), (ph, pw), (dh, dw) = _conv_attrs(node)
    o, c, kh, kw = w.shape
    _, ho, wo = g.shape
    dims = r.space(node)
    env = r.env(dims)
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(node.shape, "f")):
        r.em.line("acc = F(0.0)")
        with r.em.loops([("a_", str(kh))]):
            _inverse(r, "u_", "f1", f"{dh} * a_ - {ph}", sh, ho)
            with r.em.block("if u_ >= 0:"):
                with r.em.loops([("b_", str(kw))]):
                    _inverse(r, "v_", "f2", f"{dw} * b_ - {pw}", sw, wo)
                    with r.em.block("if v_ >= 0:"):
                        with r.em.loops([("o_", str(o))]):
                            r.em.line(f"acc += {wb.at({}, ['o_', 'f0', 'a_', 'b_'])} * "
                                      f"{gb.at(env, ['o_', 'u_', 'v_'])}")
        r.em.line(f"{out.at(env, ['f0', 'f1', 'f2'])} = acc")


def _partials(r, node, dims, shape) -> Buf:
    """A scratch buffer ``(*dims, *shape)`` private to ``node``: one partial result per row (allocated once by
    the runtime, reused), for reductions over every row done in two parallel stages."""
    b = Buf(r.name(node, "pr"), tuple(dims), tuple(int(s) for s in shape))
    r.buffers.append(BufSpec(b.var, b.dims, b.shape))
    return b


def _sum_rows(r, node, part: Buf, dims, post=None) -> None:
    """Second stage: ``out[f] = post(sum over the rows of part[rows, f])``, one thread per output element."""
    out = r.out(node)
    feats = [v for v, _ in feat_ranges(node.shape, "f")]
    env = r.env(dims)
    with r.em.loops(feat_ranges(node.shape, "f")):
        r.em.line("acc64 = 0.0")
        with r.em.loops(r.lead_ranges(dims)):
            r.em.line(f"acc64 += {part.at(env, feats)}")
        r.em.line(f"{out.at({}, feats)} = " + (post("acc64") if post else "acc64"))


def t_conv2d_weight_grad(r, node) -> None:
    """:math:`\\bar W[o, c, a, b] = \\sum_{rows, u, v} g[o, u, v]\\, x[c, s u + d a - p, s v + d b - p]` in two
    parallel stages: one thread per (row, weight) sums its row's output pixels into a partial buffer, then
    one thread per weight sums the rows (``O C k_h k_w`` threads alone would leave most of a GPU idle)."""
    g, x = node.inputs
    _whole(r, node)
    gb, xb = r.buf(g), r.buf(x)
    (sh, sw), (ph, pw), (dh, dw) = _conv_attrs(node)
    _, ho, wo = g.shape
    _, h, wd = x.shape
    full = g if len(r.dims(g)) >= len(r.dims(x)) else x
    dims = r.space(full)
    env = r.env(dims)
    part = _partials(r, node, dims, node.shape)
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(node.shape, "f")):
        r.em.line("acc = F(0.0)")
        with r.em.loops([("u_", str(ho))]):
            r.em.line(f"y_ = {sh} * u_ + {dh} * f2 - {ph}")
            with r.em.block(f"if {_in('y_', h)}:"):
                with r.em.loops([("v_", str(wo))]):
                    r.em.line(f"x_ = {sw} * v_ + {dw} * f3 - {pw}")
                    with r.em.block(f"if {_in('x_', wd)}:"):
                        r.em.line(f"acc += {gb.at(env, ['f0', 'u_', 'v_'])} * {xb.at(env, ['f1', 'y_', 'x_'])}")
        r.em.line(f"{part.at(env, ['f0', 'f1', 'f2', 'f3'])} = acc")
    _sum_rows(r, node, part, dims)


# ----------------------------------------------------------------------------- pooling
def _window(r, node, u: str, v: str, h: int, w: int) -> tuple[str, str]:
    """Lines setting the in-range window rows ``ya_:yb_`` and columns ``xa_:xb_`` of output ``(u, v)``;
    returns the two ``range(...)`` expressions."""
    (kh, kw), (sh, sw), (ph, pw) = node.attr("kernel"), node.attr("stride"), node.attr("padding")
    r.em.line(f"ya_ = max(0, {sh} * {u} - {ph})")
    r.em.line(f"yb_ = min({h}, {sh} * {u} - {ph} + {kh})")
    r.em.line(f"xa_ = max(0, {sw} * {v} - {pw})")
    r.em.line(f"xb_ = min({w}, {sw} * {v} - {pw} + {kw})")
    return "range(ya_, yb_)", "range(xa_, xb_)"


def _argmax(r, node, xb, env, u: str, v: str, h: int, w: int) -> None:
    """``by_, bx_``: the first maximum (row-major, as ``np.argmax``) of output ``(u, v)``'s window of ``x``
    in channel ``f0``; ``-1`` for an empty window."""
    ry, rx = _window(r, node, u, v, h, w)
    r.em.line("best = -math.inf")
    r.em.line("by_ = -1")
    r.em.line("bx_ = -1")
    with r.em.block(f"for y_ in {ry}:"):
        with r.em.block(f"for x_ in {rx}:"):
            r.em.line(f"val = {xb.at(env, ['f0', 'y_', 'x_'])}")
            with r.em.block("if by_ < 0 or val > best:"):
                r.em.line("best = val")
                r.em.line("by_ = y_")
                r.em.line("bx_ = x_")


def _covering(r, node, ho: int, wo: int) -> tuple[str, str]:
    """``range`` expressions of the outputs ``u`` (``v``) whose window rows (columns) hold ``f1`` (``f2``):
    :math:`s u - p \\le y < s u - p + k`."""
    (kh, kw), (sh, sw), (ph, pw) = node.attr("kernel"), node.attr("stride"), node.attr("padding")
    return (f"range(max(0, (f1 + {ph - kh + sh}) // {sh}), min({ho}, (f1 + {ph}) // {sh} + 1))",
            f"range(max(0, (f2 + {pw - kw + sw}) // {sw}), min({wo}, (f2 + {pw}) // {sw} + 1))")


def _per_element(r, node):
    """Loop ranges, env and output buffer for one thread per element of ``node``."""
    dims = r.space(node)
    return r.lead_ranges(dims) + feat_ranges(node.shape, "f"), r.env(dims), r.out(node)


def _window_reduce(r, node, init: str, step, final) -> None:
    """One thread per output ``(c, u, v)``: ``acc = init``, ``step(element)`` over the in-range window of the
    node's input, then ``out = final("acc")`` (max and average pooling differ only in these three)."""
    x = node.inputs[0]
    xb = r.buf(x)
    ranges, env, out = _per_element(r, node)
    with r.em.loops(ranges):
        ry, rx = _window(r, node, "f1", "f2", *x.shape[1:])
        r.em.line(f"acc = {init}")
        with r.em.block(f"for y_ in {ry}:"):
            with r.em.block(f"for x_ in {rx}:"):
                r.em.line(step(xb.at(env, ["f0", "y_", "x_"])))
        r.em.line(f"{out.at(env, ['f0', 'f1', 'f2'])} = {final('acc')}")


def t_maxpool2d(r, node) -> None:
    """:math:`y[c, u, v] = \\max` over the in-range window (padding counts as :math:`-\\infty`)."""
    _window_reduce(r, node, "-math.inf", lambda e: f"acc = max(acc, {e})", lambda acc: acc)


def t_maxpool2d_select(r, node) -> None:
    """:math:`y[c, u, v] = g[c, \\arg\\max_{window(u, v)} x]` (0 for an empty window)."""
    x, g = node.inputs
    xb, gb = r.buf(x), r.buf(g)
    ranges, env, out = _per_element(r, node)
    with r.em.loops(ranges):
        _argmax(r, node, xb, env, "f1", "f2", *x.shape[1:])
        r.em.line(f"{out.at(env, ['f0', 'f1', 'f2'])} = "
                  f"{gb.at(env, ['f0', 'by_', 'bx_'])} if by_ >= 0 else F(0.0)")


def t_maxpool2d_grad(r, node) -> None:
    """:math:`\\bar x[c, y, x] = \\sum g[c, u, v]` over the windows that hold ``(y, x)`` and whose first
    maximum it is (each window's maximum recomputed by the thread: a gather, no racing ``+=``)."""
    x, g = node.inputs
    xb, gb = r.buf(x), r.buf(g)
    ranges, env, out = _per_element(r, node)
    ru, rv = _covering(r, node, *g.shape[1:])
    with r.em.loops(ranges):
        r.em.line("acc = F(0.0)")
        with r.em.block(f"for u_ in {ru}:"):
            with r.em.block(f"for v_ in {rv}:"):
                _argmax(r, node, xb, env, "u_", "v_", *x.shape[1:])
                with r.em.block("if by_ == f1 and bx_ == f2:"):
                    r.em.line(f"acc += {gb.at(env, ['f0', 'u_', 'v_'])}")
        r.em.line(f"{out.at(env, ['f0', 'f1', 'f2'])} = acc")


def t_avgpool2d(r, node) -> None:
    """:math:`y = \\frac{1}{k_h k_w}\\sum` over the in-range window (zero padding counts)."""
    kh, kw = node.attr("kernel")
    _window_reduce(r, node, "F(0.0)", lambda e: f"acc += {e}", lambda acc: f"{acc} / F({float(kh * kw)!r})")


def t_avgpool2d_grad(r, node) -> None:
    """:math:`\\bar x[c, y, x] = \\frac{1}{k_h k_w}\\sum g[c, u, v]` over the windows that hold ``(y, x)``."""
    (g,) = node.inputs
    gb = r.buf(g)
    kh, kw = node.attr("kernel")
    ranges, env, out = _per_element(r, node)
    ru, rv = _covering(r, node, *g.shape[1:])
    with r.em.loops(ranges):
        r.em.line("acc = F(0.0)")
        with r.em.block(f"for u_ in {ru}:"):
            with r.em.block(f"for v_ in {rv}:"):
                r.em.line(f"acc += {gb.at(env, ['f0', 'u_', 'v_'])}")
        r.em.line(f"{out.at(env, ['f0', 'f1', 'f2'])} = acc / F({float(kh * kw)!r})")


# ----------------------------------------------------------------------------- per-channel statistics
def _count(r, shape, dims) -> str:
    return " * ".join([str(int(s)) for s in shape[1:]] + [r.size(d) for d in dims]) or "1"


def t_channel_mean(r, node) -> None:
    """:math:`\\mu_c = \\frac{1}{N}\\sum x[\\dots, c, \\dots]` in two parallel stages: one thread per (row,
    channel) sums the row's pixels, then one thread per channel sums the rows (in float64)."""
    (x,) = node.inputs
    _whole(r, node)
    xb = r.buf(x)
    dims = r.space(x)
    env = r.env(dims)
    rest = feat_ranges(x.shape[1:], "q")
    part = _partials(r, node, dims, node.shape)
    with r.em.loops(r.lead_ranges(dims) + [("f0", str(x.shape[0]))]):
        r.em.line("acc64 = 0.0")
        with r.em.loops(rest):
            r.em.line(f"acc64 += {xb.at(env, ['f0'] + [v for v, _ in rest])}")
        r.em.line(f"{part.at(env, ['f0'])} = acc64")
    _sum_rows(r, node, part, dims, post=lambda a: f"{a} / ({_count(r, x.shape, dims)})")


def t_channel_spread(r, node) -> None:
    """:math:`\\bar x[\\dots, c, \\dots] = \\bar\\mu_c / N` over the like-value's whole index space."""
    (g,) = node.inputs
    gb = r.buf(g)
    count = _count(r, node.shape, r.dims(node))
    r.fill_loops(node, r.out(node), lambda e, f: f"{gb.at(e, f[:1])} / F({count})")


TEMPLATES = {
    "conv2d": t_conv2d, "conv2d_input_grad": t_conv2d_input_grad, "conv2d_weight_grad": t_conv2d_weight_grad,
    "maxpool2d": t_maxpool2d, "maxpool2d_grad": t_maxpool2d_grad, "maxpool2d_select": t_maxpool2d_select,
    "avgpool2d": t_avgpool2d, "avgpool2d_grad": t_avgpool2d_grad,
    "channel_mean": t_channel_mean, "channel_spread": t_channel_spread,
}
