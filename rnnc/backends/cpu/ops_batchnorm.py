"""CPU templates of the batch-normalisation ops (:mod:`rnnc.ops.batchnorm`).

Fast path: the map as an ``(N, C, R)`` view and one call of a parallel kernel of
:mod:`~rnnc.backends.cpu.kernels_image` (each pass reads the map once). A value whose buffer is not such a view
(part of a wider buffer, a scan-fixed layout the view cannot express) gets plain loop nests with the same
formulas: two passes for the statistics (mean, then centred squares), float64 sums.
"""
from __future__ import annotations

from rnnc.backends.cpu.emit import feat_ranges
from rnnc.backends.cpu.ops_image import _by_channel, _call, _rows, _view, _whole


def _plain(r, node) -> bool:
    b = r.out(node)
    return b.literal is None and not b.offset and not b.dims


def _views(r, lead, nodes):
    """``(N, C, R)`` views of ``nodes`` over ``lead``'s looped dims, or None if any is not a plain view."""
    dims = r.space(lead)
    views = [_view(r, n, dims, _rows(r, dims), _by_channel(lead.shape)) for n in nodes]
    return None if any(v is None for v in views) else views


def _shared_vars(r, nodes):
    """Array names of shared per-channel inputs, or None if one is a constant or part of a wider buffer."""
    bufs = [r.buf(n) for n in nodes]
    if any(b.literal is not None or b.offset or b.dims for b in bufs):
        return None
    return [b.var for b in bufs]


def count_of(r, x) -> str:
    """:math:`N` per channel as an expression: pixels × the size of every lead dim of ``x``."""
    return " * ".join([str(int(s)) for s in x.shape[1:]] + [r.size(d) for d in r.dims(x)]) or "1"


def _channel_sum(r, x, term) -> None:
    """``acc64 = sum of term(env, feats)`` over every element of channel ``c_`` of ``x`` (in a ``c_`` loop)."""
    env = r.env(r.space(x))
    rest = feat_ranges(x.shape[1:], "q")
    r.em.line("acc64 = 0.0")
    with r.em.loops(r.lead_ranges(r.space(x)) + rest):
        r.em.line(f"acc64 += {term(env, ['c_'] + [v for v, _ in rest])}")


def inv_of(r, s, env, c: str, eps: float) -> str:
    """:math:`1/\\sqrt{\\sigma^2_c + \\epsilon}` read off the statistics ``s``."""
    n = s.shape[0] // 2
    return f"(F(1.0) / math.sqrt({r.buf(s).at(env, [f'{n} + {c}'])} + F({eps!r})))"


def t_bn_stats(r, node) -> None:
    """:math:`[\\mu; \\sigma^2]` per channel."""
    (x,) = node.inputs
    _whole(r, node)
    out, c = r.out(node), x.shape[0]
    views = _views(r, x, [x])
    if views and _plain(r, node):
        _call(r, "bn_stats", views[0], out.var)
        return
    xb = r.buf(x)
    with r.em.loops([("c_", str(c))]):
        _channel_sum(r, x, lambda e, f: xb.at(e, f))
        r.em.line(f"m_ = acc64 / ({count_of(r, x)})")
        _channel_sum(r, x, lambda e, f: f"({xb.at(e, f)} - m_) ** 2")
        r.em.line(f"{out.at({}, ['c_'])} = m_")
        r.em.line(f"{out.at({}, [f'{c} + c_'])} = acc64 / ({count_of(r, x)})")


def t_batch_norm(r, node) -> None:
    """:math:`y = \\gamma (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} + \\beta`."""
    x, s, *gb = node.inputs
    eps = node.attr("eps")
    r.out(node)
    views = _views(r, x, [x, node])
    shared = _shared_vars(r, [s] + gb)
    if views and shared:
        affine = shared[1:] or [shared[0], shared[0]]
        _call(r, "bn_apply", views[0], shared[0], *affine, bool(gb), f"{eps!r}", views[1])
        return
    normalise_loops(r, node)


def normalise_loops(r, node) -> None:
    """``batch_norm`` as one loop nest writing each element once (also the CUDA form)."""
    x, s, *gb = node.inputs
    eps, xb, sb = node.attr("eps"), r.buf(x), r.buf(s)

    def expr(env, f):
        y = f"({xb.at(env, f)} - {sb.at(env, f[:1])}) * {inv_of(r, s, env, f[0], eps)}"
        return f"{y} * {r.buf(gb[0]).at(env, f[:1])} + {r.buf(gb[1]).at(env, f[:1])}" if gb else y
    r.fill_loops(node, r.out(node), expr)


def t_bn_sums(r, node) -> None:
    """:math:`[\\sum g; \\sum g \\hat x]` per channel."""
    g, x, s = node.inputs
    _whole(r, node)
    eps, out, c = node.attr("eps"), r.out(node), x.shape[0]
    views = _views(r, x, [g, x])
    shared = _shared_vars(r, [s])
    if views and shared and _plain(r, node):
        _call(r, "bn_sums", *views, shared[0], f"{eps!r}", out.var)
        return
    gb, xb, sb = r.buf(g), r.buf(x), r.buf(s)
    with r.em.loops([("c_", str(c))]):
        _channel_sum(r, x, lambda e, f: gb.at(e, f))
        r.em.line(f"{out.at({}, ['c_'])} = acc64")
        _channel_sum(r, x, lambda e, f: f"{gb.at(e, f)} * ({xb.at(e, f)} - {sb.at(e, ['c_'])})")
        r.em.line(f"{out.at({}, [f'{c} + c_'])} = acc64 * {inv_of(r, s, {}, 'c_', eps)}")


def _grad_inputs(node):
    """``g, x, s, sums, gamma (list), z`` of a ``bn_input_grad`` node (``z``: its relu mask's operand, or None)."""
    g, x, s, sums, *rest = node.inputs
    z = rest.pop() if node.attr("mask") else None
    return g, x, s, sums, rest, z


def t_bn_input_grad(r, node) -> None:
    """:math:`\\bar x = \\gamma r (g - \\sum g / N - \\hat x \\sum (g \\hat x) / N)` (times :math:`[z > 0]`
    with ``mask``: :mod:`rnnc.passes.mask_bn`)."""
    g, x, s, sums, gamma, z = _grad_inputs(node)
    eps = node.attr("eps")
    r.out(node)
    views = _views(r, x, [g, x, node] + ([z] if z is not None else []))
    shared = _shared_vars(r, [s, sums] + gamma)
    if views and shared and not r.fixed:         # the kernel counts N from the view: every lead dim looped
        head = [*views[:2], shared[0], shared[1], shared[2] if gamma else shared[0], bool(gamma), f"{eps!r}"]
        if z is None:
            _call(r, "bn_input_grad", *head, views[2])
        else:
            _call(r, "bn_input_grad_masked", *head, views[3], views[2])
        return
    input_grad_loops(r, node)


def input_grad_loops(r, node) -> None:
    """``bn_input_grad`` as one loop nest writing each element once (also the CUDA form)."""
    g, x, s, sums, gamma, z = _grad_inputs(node)
    eps, c, count = node.attr("eps"), x.shape[0], count_of(r, x)
    gb, xb, sb, tb = r.buf(g), r.buf(x), r.buf(s), r.buf(sums)

    def expr(env, f):
        inv = inv_of(r, s, env, f[0], eps)
        k = f"{r.buf(gamma[0]).at(env, f[:1])} * {inv}" if gamma else inv
        xhat = f"({xb.at(env, f)} - {sb.at(env, f[:1])}) * {inv}"
        value = (f"{k} * ({gb.at(env, f)} - {tb.at(env, f[:1])} / F({count}) - "
                 f"{xhat} * {tb.at(env, [f'{c} + {f[0]}'])} / F({count}))")
        if z is None:
            return value
        return f"({value}) * (F(1.0) if {r.buf(z).at(env, f)} > F(0.0) else F(0.0))"
    r.fill_loops(node, r.out(node), expr)


TEMPLATES = {"bn_stats": t_bn_stats, "batch_norm": t_batch_norm, "bn_sums": t_bn_sums,
             "bn_input_grad": t_bn_input_grad}
