"""CPU templates of the image ops (:mod:`rnnc.ops.image`): convolution, pooling, per-channel statistics and
the feature map <-> patch grid moves.

Convolution is im2col plus GEMM. With ``N`` rows (loop indices × batch), ``K = C k_h k_w`` and
``P = H_{out} W_{out}``::

    cols[(c, a, b), (n, u, v)] = x_n[c, s u + d a - p, s v + d b - p]
    conv2d:              Y (O, N P) = W (O, K) @ cols,         y_n[o, u, v] = Y[o, (n, u, v)]
    conv2d_input_grad:   D (K, N P) = W^T (K, O) @ G (O, N P), x̄ = col2im(D)
    conv2d_weight_grad:  W̄ (O, K)   = G (O, N P) @ cols^T

Where every buffer has an ``(N, C, H, W)`` view (lead dims equal, scan indices first) the generated code calls
the cache-blocked kernels of :mod:`kernels_conv`: they run the products chunk by chunk of samples, each
chunk's columns (``kernels_image.CHUNK_FLOATS`` floats) filled and multiplied while they are in L2, the
columns of the forward convolution kept (chunk-major) for the weight gradient of the same ``x``; where most of
a map's taps fall in the padding, their ``_regions`` twins multiply the in-range taps only (:mod:`conv_regions`).
Pooling and the channel statistics call shared kernels too (small modules, fast Numba compiles). Other layouts
(broadcast reads) get inline loop nests over :meth:`Buf.at` with one GEMM over every row, their zero padding
never written (scratch buffers start zeroed; only in-range window positions are visited).
"""
from __future__ import annotations

from rnnc.backends.cpu.emit import feat_ranges
from rnnc.backends.cpu.pieces import RunCall
from rnnc.backends.cpu.rendered import BufSpec
from rnnc.errors import RnncError


# ----------------------------------------------------------------------------- helpers
def _scratch(r, node, prefix: str, dims, size: int) -> str:
    """A zeroed buffer ``(*dims, size)`` private to ``node`` (allocated once by the runtime, reused)."""
    var = r.name(node, prefix)
    r.buffers.append(BufSpec(var, tuple(dims), (int(size),)))
    return var


def _kernels():
    """:mod:`kernels_image`, imported when an image op is rendered, not with rnnc: it loads gemm (OpenBLAS's
    small-matrix kernels through cffi) and Numba's CPU target, a quarter second a process that never needs them."""
    from rnnc.backends.cpu import kernels_image

    return kernels_image

def _view(r, node, dims, nrows: str, shape=None) -> str | None:
    """``(N, C, H, W)`` view expression of ``node``'s buffer when its lead dims are exactly ``dims`` (after the
    fixed scan indices, which must come first): the fast path through :mod:`kernels_image`; else None."""
    b = r.bufs.get(node)
    if shape is None and len(node.shape) != 3:
        return None
    shape = tuple(node.shape) if shape is None else shape
    if b is None or b.literal is not None or getattr(b, "offset", 0):
        return None
    k = sum(d in r.fixed for d in b.dims)
    if any(d not in r.fixed for d in b.dims[:k]) or list(b.dims[k:]) != list(dims):
        return None
    base = f"{b.var}[{', '.join(r.fixed[d] for d in b.dims[:k])}]" if k else b.var
    return f"{base}.reshape(({nrows}, {', '.join(str(int(s)) for s in shape)}))"


def _call(r, name: str, *args) -> None:
    """``imk.name(args)``; the kernels' version goes in the source (so a stale cached module is never used).
    A parallel kernel (:data:`kernels_image.PARALLEL`) at a map stage's top level is called by ``run`` itself
    between two stage functions (a :class:`~rnnc.backends.cpu.pieces.RunCall`); inside a loop, its serial twin
    is called in place."""
    r.em.line(f"# kernels_image {_kernels().VERSION}")
    r.image_kernels = True          # the runtime keeps rnnc's own threads away from Numba's (blas_threads)
    call = ", ".join(str(a) for a in args)
    if name not in _kernels().PARALLEL:
        r.em.line(f"imk.{name}({call})")
    elif r.fixed or r.em.depth != 1:
        r.em.line(f"imk.{name}_serial({call})")
    else:
        r.em.mark(RunCall("imk", name, tuple(str(a) for a in args), comment=r.em.tag, where=r.em.where, threads=False))


def _by_channel(shape) -> tuple:
    """``(C, R)`` of a feature shape ``(C, ...)``, as the trailing dims of an ``(N, C, R)`` view."""
    rest = 1
    for s in shape[1:]:
        rest *= int(s)
    return (int(shape[0]), rest)


def _cols_seen(r) -> dict:
    """im2col buffers filled earlier in this run (outside scans), by (x, geometry, kernel size, rows)."""
    return r.__dict__.setdefault("_image_cols", {})


def _rows(r, dims) -> str:
    """Number of rows (product of the looped lead sizes) as an expression."""
    return " * ".join(r.size(d) for d in dims) or "1"


def _whole(r, node) -> None:
    """Ops that reduce over every loop index cannot run one scan step at a time."""
    if r.fixed:
        raise RnncError(f"{node.op} ({node.label()} at {node.where}) reduces over every loop index; it cannot "
                        f"run inside a scan over {[a.name for a in r.fixed]}")


def _range(lo_off: str, stride: int, size: int, out: int) -> tuple[str, str]:
    """Output indices ``u`` with ``0 <= s u + off < size`` (``off`` = d a - p): ``range(lo, hi)``."""
    lo = f"max(0, ({-1} * ({lo_off}) + {stride - 1}) // {stride})"
    hi = f"min({out}, ({size - 1} - ({lo_off})) // {stride} + 1)"
    return lo, hi


def _windows(r, geo, body) -> None:
    """Loops over kernel offsets (a_, b_) and the in-range outputs (u_, v_) with input position (y_, x_)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (h, w), (ho, wo) = geo
    with r.em.loops([("a_", str(kh))]):
        u0, u1 = _range(f"{dh} * a_ - {ph}", sh, h, ho)
        r.em.line(f"u0_ = {u0}")
        r.em.line(f"u1_ = {u1}")
        with r.em.loops([("b_", str(kw))]):
            v0, v1 = _range(f"{dw} * b_ - {pw}", sw, w, wo)
            r.em.line(f"v0_ = {v0}")
            r.em.line(f"v1_ = {v1}")
            with r.em.block("for u_ in range(u0_, u1_):"):
                r.em.line(f"y_ = {sh} * u_ + {dh} * a_ - {ph}")
                with r.em.block("for v_ in range(v0_, v1_):"):
                    r.em.line(f"x_ = {sw} * v_ + {dw} * b_ - {pw}")
                    body()


def _conv_geo(node, x_shape, out_shape, k_shape) -> tuple:
    return (k_shape, node.attr("stride"), node.attr("padding"), node.attr("dilation"), tuple(x_shape[1:]),
            tuple(out_shape[1:]))


def _row_loops(r, dims, body) -> None:
    """``nr_`` counts the rows: ``for lead...: body(); nr_ += 1``."""
    r.em.line("nr_ = 0")
    with r.em.loops(r.lead_ranges(dims)):
        body()
        r.em.line("nr_ += 1")


def _im2col(r, node, x, dims, env, cols, geo, nrows) -> None:
    """``cols (C, kh, kw, N, Ho, Wo)`` from ``x``'s in-range window positions."""
    (kh, kw), _, _, _, _, (ho, wo) = geo
    c = x.shape[0]
    xb = r.buf(x)
    r.em.line(f"c6_ = {cols}.reshape(({c}, {kh}, {kw}, {nrows}, {ho}, {wo}))")

    def body():
        with r.em.loops([("c_", str(c))]):
            _windows(r, geo, lambda: r.em.line(
                f"c6_[c_, a_, b_, nr_, u_, v_] = {xb.at(env, ['c_', 'y_', 'x_'])}"))
    _row_loops(r, dims, body)


def _gather_maps(r, g, dims, env, var, nrows) -> None:
    """``G (O, N, Ho, Wo)`` with ``G[o, n] = g_n[o]``: the adjoint maps as one matrix ``(O, N P)``."""
    o, ho, wo = g.shape
    gb = r.buf(g)
    r.em.line(f"g4_ = {var}.reshape(({o}, {nrows}, {ho}, {wo}))")
    _row_loops(r, dims, lambda: _copy(r, [("o_", str(o)), ("u_", str(ho)), ("v_", str(wo))],
                                      "g4_[o_, nr_, u_, v_]", gb.at(env, ["o_", "u_", "v_"])))


def _copy(r, ranges, dst: str, src: str) -> None:
    with r.em.loops(ranges):
        r.em.line(f"{dst} = {src}")


def _geo_args(node) -> tuple:
    return node.attr("stride") + node.attr("padding") + node.attr("dilation")


def _kernel_view(r, w, four: bool = False) -> str:
    """The kernel as ``(O, C kh kw)`` (or its own ``(O, C, kh, kw)`` shape with ``four``)."""
    wb = r.buf(w)
    if wb.literal is not None or wb.dims:
        raise RnncError(f"conv2d: the kernel {w.label()} must be an axis-free array (got {wb.dims or 'a constant'})")
    o, c, kh, kw = w.shape
    return f"{wb.var}.reshape(({o}, {c}, {kh}, {kw}))" if four else f"{wb.var}.reshape(({o}, {c * kh * kw}))"


def _flat(var: str, nrows: str, size: int) -> str:
    """A per-row scratch buffer as one flat array (the blocked kernels lay chunks out in it themselves)."""
    return f"{var}.reshape(({nrows} * {size},))"


def _regions(c: int, x_shape, out_shape, taps, geo) -> bool:
    """Whether a convolution of ``c`` maps ``x_shape[-2:] -> out_shape[-2:]`` runs on the ``_regions`` kernels
    (``kernels_conv.regions``: most of its taps out of range); a static choice, the same for a forward
    convolution and the weight gradient of the same maps."""
    from rnnc.backends.cpu import kernels_conv

    return kernels_conv.regions(c, *x_shape[-2:], *out_shape[-2:], *taps, *geo)


def _blocked(r, name: str, *args) -> None:
    """``imk.<name>(*args, budget)``: the cache-blocked convolution kernels (chunks of samples whose im2col
    columns fit ``kernels_image.CHUNK_FLOATS``)."""
    _call(r, name, *args, _kernels().CHUNK_FLOATS)


# ----------------------------------------------------------------------------- convolution
def t_conv2d(r, node) -> None:
    """:math:`Y = W\\,\\mathrm{im2col}(x)`. Fast path (every buffer a ``(N, C, H, W)`` view): the blocked kernel
    (im2col and GEMM chunk by chunk of samples, the columns kept for the weight gradient); else im2col into a
    scratch buffer, one GEMM, one copy to ``(O, Ho, Wo)``."""
    x, w = node.inputs
    out = r.out(node)
    dims = r.space(node)
    env = r.env(dims)
    o, c, kh, kw = w.shape
    _, ho, wo = node.shape
    nrows, k, p = _rows(r, dims), c * kh * kw, ho * wo
    cols = _scratch(r, node, "im", dims, k * p)
    yv = _scratch(r, node, "gy", dims, o * p)
    xv, ov = _view(r, x, dims, nrows), _view(r, node, dims, nrows)
    if xv and ov:
        name = "conv2d_fwd_regions" if _regions(c, x.shape, node.shape, (kh, kw), _geo_args(node)) else "conv2d_fwd"
        _blocked(r, name, xv, _kernel_view(r, w, True), _flat(cols, nrows, k * p), _flat(yv, nrows, o * p),
                 ov, *_geo_args(node))
        if not r.fixed:     # the weight gradient of the same x and geometry reuses these columns
            _cols_seen(r)[(x, _geo_args(node), (kh, kw), tuple(dims))] = cols
        return
    _im2col(r, node, x, dims, env, cols, _conv_geo(node, x.shape, node.shape, (kh, kw)), nrows)
    r.em.line(f"np.dot({_kernel_view(r, w)}, {cols}.reshape(({k}, {nrows} * {p})), "
              f"{yv}.reshape(({o}, {nrows} * {p})))")
    r.em.line(f"y4_ = {yv}.reshape(({o}, {nrows}, {ho}, {wo}))")
    _row_loops(r, dims, lambda: _copy(r, [("o_", str(o)), ("u_", str(ho)), ("v_", str(wo))],
                                      out.at(env, ["o_", "u_", "v_"]), "y4_[o_, nr_, u_, v_]"))


def t_conv2d_input_grad(r, node) -> None:
    """:math:`\\bar x = \\mathrm{col2im}(W^T G)`: gather ``G``, one GEMM, scatter-add the columns (chunk by
    chunk of samples in the blocked kernel on the fast path). Where the forward convolution takes the regions
    (stride 1), the forward convolution of ``G`` with the flipped kernel instead (``kernels_conv``)."""
    g, w = node.inputs
    out = r.out(node)
    dims = r.space(node)
    env = r.env(dims)
    o, c, kh, kw = w.shape
    _, ho, wo = g.shape
    _, h, wd = node.shape
    nrows, k, p = _rows(r, dims), c * kh * kw, ho * wo
    g4, ov = _view(r, g, dims, nrows), _view(r, node, dims, nrows)
    sh, sw, ph, pw, dh, dw = _geo_args(node)
    if g4 and ov and (sh, sw) == (1, 1) and _regions(c, node.shape, g.shape, (kh, kw), _geo_args(node)):
        wf = f"{_scratch(r, node, 'wf', (), c * o * kh * kw)}.reshape(({c}, {o}, {kh}, {kw}))"
        q = o * kh * kw * h * wd          # at most this many floats of columns a row
        cols, gy = _scratch(r, node, "im", dims, q), _scratch(r, node, "gy", dims, c * h * wd)
        _call(r, "flip", _kernel_view(r, w, True), wf)
        _blocked(r, "conv2d_fwd_regions", g4, wf, _flat(cols, nrows, q), _flat(gy, nrows, c * h * wd), ov, 1, 1,
                 dh * (kh - 1) - ph, dw * (kw - 1) - pw, dh, dw)
        return
    gv = _scratch(r, node, "gm", dims, o * p)
    dv = _scratch(r, node, "im", dims, k * p)
    if g4 and ov:
        _blocked(r, "conv2d_igrad", g4, _kernel_view(r, w, True), _flat(gv, nrows, o * p), _flat(dv, nrows, k * p),
                 ov, *_geo_args(node))
        return
    _gather_maps(r, g, dims, env, gv, nrows)
    r.em.line(f"np.dot({_kernel_view(r, w)}.T, {gv}.reshape(({o}, {nrows} * {p})), "
              f"{dv}.reshape(({k}, {nrows} * {p})))")
    r.fill_loops(node, out, lambda e, f: "F(0.0)")
    r.em.line(f"c6_ = {dv}.reshape(({c}, {kh}, {kw}, {nrows}, {ho}, {wo}))")
    geo = _conv_geo(node, node.shape, g.shape, (kh, kw))

    def body():
        with r.em.loops([("c_", str(c))]):
            _windows(r, geo, lambda: r.em.line(f"{out.at(env, ['c_', 'y_', 'x_'])} += c6_[c_, a_, b_, nr_, u_, v_]"))
    _row_loops(r, dims, body)


def t_conv2d_weight_grad(r, node) -> None:
    """:math:`\\bar W = G\\,\\mathrm{im2col}(x)^T` over every row (sample × loop index): on the fast path the
    blocked kernel sums one GEMM per chunk of samples, on the forward convolution's columns when it left them."""
    g, x = node.inputs
    _whole(r, node)
    out = r.out(node)
    full = g if len(r.dims(g)) >= len(r.dims(x)) else x
    dims = r.space(full)
    env = r.env(dims)
    o, c, kh, kw = node.shape
    _, ho, wo = g.shape
    nrows, k, p = _rows(r, dims), c * kh * kw, ho * wo
    gv = _scratch(r, node, "gm", dims, o * p)
    g4, xv = _view(r, g, dims, nrows), _view(r, x, dims, nrows)
    if g4 and xv:
        cols = _cols_seen(r).get((x, _geo_args(node), (kh, kw), tuple(dims)))
        fill = cols is None
        if fill:
            cols = _scratch(r, node, "im", dims, k * p)
        name = "conv2d_wgrad_regions" if _regions(c, x.shape, g.shape, (kh, kw), _geo_args(node)) else "conv2d_wgrad"
        _blocked(r, name, g4, xv, _flat(cols, nrows, k * p), fill, _flat(gv, nrows, o * p),
                 f"{out.var}.reshape(({o}, {c}, {kh}, {kw}))", *_geo_args(node))
        return
    cols = _scratch(r, node, "im", dims, k * p)
    _gather_maps(r, g, dims, env, gv, nrows)
    _im2col(r, node, x, dims, env, cols, _conv_geo(node, x.shape, g.shape, (kh, kw)), nrows)
    r.em.line(f"np.dot({gv}.reshape(({o}, {nrows} * {p})), {cols}.reshape(({k}, {nrows} * {p})).T, "
              f"{out.var}.reshape(({o}, {k})))")


# ----------------------------------------------------------------------------- pooling
def _pool_geo(node, x_shape, out_shape) -> tuple:
    return (node.attr("kernel"), node.attr("stride"), node.attr("padding"), (1, 1), tuple(x_shape[1:]),
            tuple(out_shape[1:]))


def _window_scan(r, geo, body, at_u_v) -> None:
    """For each output ``(u_, v_)``: loop over its in-range window positions ``(y_, x_)`` (a-major order)."""
    (kh, kw), (sh, sw), (ph, pw), _, (h, w), (ho, wo) = geo
    with r.em.loops([("u_", str(ho)), ("v_", str(wo))]):
        r.em.line(f"ya_ = max(0, {sh} * u_ - {ph})")
        r.em.line(f"yb_ = min({h}, {sh} * u_ - {ph} + {kh})")
        r.em.line(f"xa_ = max(0, {sw} * v_ - {pw})")
        r.em.line(f"xb_ = min({w}, {sw} * v_ - {pw} + {kw})")
        at_u_v("start")
        with r.em.block("for y_ in range(ya_, yb_):"):
            with r.em.block("for x_ in range(xa_, xb_):"):
                body()
        at_u_v("end")


def _argmax_scan(r, xb, env, geo, done) -> None:
    """``by_, bx_``: the first maximum of each window (row-major, as ``np.argmax``); then ``done()``."""
    def edge(when):
        if when == "start":
            r.em.line("best = -math.inf")
            r.em.line("by_ = -1")
            r.em.line("bx_ = -1")
        else:
            with r.em.block("if by_ >= 0:"):
                done()

    def body():
        with r.em.block(f"if by_ < 0 or {xb.at(env, ['c_', 'y_', 'x_'])} > best:"):
            r.em.line(f"best = {xb.at(env, ['c_', 'y_', 'x_'])}")
            r.em.line("by_ = y_")
            r.em.line("bx_ = x_")
    _window_scan(r, geo, body, edge)


def _pool_fast(r, node, kernel: str, maps, out, extra=()) -> bool:
    """``imk.<kernel>(*maps, out, kh, kw, sh, sw, ph, pw, *extra)`` when every buffer has a 4-D view."""
    dims = r.space(node)
    nrows = _rows(r, dims)
    views = [_view(r, m, dims, nrows) for m in maps + [out]]
    if not all(views):
        return False
    _call(r, kernel, *views, *(node.attr("kernel") + node.attr("stride") + node.attr("padding")), *extra)
    return True


def _map_loops(r, node, c):
    dims = r.space(node)
    return dims, r.env(dims), r.lead_ranges(dims) + [("c_", str(c))]


def _pool_key(r, node, x) -> tuple:
    return (x, _pool_attrs(node), tuple(r.space(node)))


def _pool_attrs(node) -> tuple:
    return node.attr("kernel") + node.attr("stride") + node.attr("padding")


def _routed_here(r, node, x) -> bool:
    """Does this kernel route adjoints through the windows of ``node`` (a ``maxpool2d_grad`` or ``_select``
    of the same map and geometry)? Then the forward pass keeps each window's argmax for it."""
    return any(n.op in ("maxpool2d_grad", "maxpool2d_select") and n.inputs[0] is x
               and _pool_attrs(n) == _pool_attrs(node) for n in r.graph.nodes)


def _argmax_kept(r, node, x, select: bool) -> bool:
    """``imk.maxpool_scatter`` (the route, or with ``select`` the selection) from the positions the forward pool
    of ``x`` kept in this run, if it did."""
    idx = None if r.fixed else _pools_seen(r).get(_pool_key(r, node, x))
    if idx is None:
        return False
    dims = r.space(node)
    nrows = _rows(r, dims)
    g, out = node.inputs[1], node
    views = [_view(r, g, dims, nrows), _view(r, out, dims, nrows)]
    if not all(views):
        return False
    _call(r, "maxpool_scatter", idx, *views, select)
    return True


def _pools_seen(r) -> dict:
    """Argmax buffers of max pools run earlier in this run (outside scans), by (x, geometry, rows)."""
    return r.__dict__.setdefault("_image_pools", {})


def t_maxpool2d(r, node) -> None:
    """:math:`y[c, u, v] = \\max` over the in-range window (padding counts as :math:`-\\infty`). When the same
    kernel routes adjoints through these windows (a gradient kernel), the fast path keeps each window's argmax
    too (``imk.maxpool_argmax``), so the backward pass scatters instead of searching the windows again."""
    (x,) = node.inputs
    out, xb = r.out(node), r.buf(x)
    if not r.fixed and _routed_here(r, node, x):
        dims = r.space(node)
        nrows = _rows(r, dims)
        xv, ov = _view(r, x, dims, nrows), _view(r, node, dims, nrows)
        if xv and ov:
            c, ho, wo = node.shape
            var = r.name(node, "ix")
            r.buffers.append(BufSpec(var, tuple(dims), (int(c * ho * wo),), kind="i"))
            idx = f"{var}.reshape(({nrows}, {c}, {ho}, {wo}))"
            _call(r, "maxpool_argmax", xv, ov, idx, *_pool_attrs(node))
            _pools_seen(r)[_pool_key(r, node, x)] = idx
            return
    if _pool_fast(r, node, "maxpool", [x], node):
        return
    dims, env, ranges = _map_loops(r, node, x.shape[0])
    with r.em.loops(ranges):
        def edge(when):
            if when == "start":
                r.em.line("best = -math.inf")
            else:
                r.em.line(f"{out.at(env, ['c_', 'u_', 'v_'])} = best")
        _window_scan(r, _pool_geo(node, x.shape, node.shape),
                     lambda: r.em.line(f"best = max(best, {xb.at(env, ['c_', 'y_', 'x_'])})"), edge)


def t_maxpool2d_grad(r, node) -> None:
    """Each output's adjoint goes to the first maximum of its window."""
    x, g = node.inputs
    out, xb, gb = r.out(node), r.buf(x), r.buf(g)
    if _argmax_kept(r, node, x, False) or _pool_fast(r, node, "maxpool_route", [x, g], node, (False,)):
        return
    r.fill_loops(node, out, lambda e, f: "F(0.0)")
    dims, env, ranges = _map_loops(r, node, x.shape[0])
    with r.em.loops(ranges):
        _argmax_scan(r, xb, env, _pool_geo(node, x.shape, g.shape), lambda: r.em.line(
            f"{out.at(env, ['c_', 'by_', 'bx_'])} += {gb.at(env, ['c_', 'u_', 'v_'])}"))


def t_maxpool2d_select(r, node) -> None:
    """:math:`y[c, u, v] = g[c, \\arg\\max_{window} x]`."""
    x, g = node.inputs
    out, xb, gb = r.out(node), r.buf(x), r.buf(g)
    if _argmax_kept(r, node, x, True) or _pool_fast(r, node, "maxpool_route", [x, g], node, (True,)):
        return
    r.fill_loops(node, out, lambda e, f: "F(0.0)")
    dims, env, ranges = _map_loops(r, node, x.shape[0])
    with r.em.loops(ranges):
        _argmax_scan(r, xb, env, _pool_geo(node, x.shape, node.shape), lambda: r.em.line(
            f"{out.at(env, ['c_', 'u_', 'v_'])} = {gb.at(env, ['c_', 'by_', 'bx_'])}"))


def t_avgpool2d(r, node) -> None:
    """:math:`y = \\frac{1}{k_h k_w}\\sum` over the in-range window (zero padding counts)."""
    (x,) = node.inputs
    out, xb = r.out(node), r.buf(x)
    kh, kw = node.attr("kernel")
    if _pool_fast(r, node, "avgpool", [x], node):
        return
    dims, env, ranges = _map_loops(r, node, x.shape[0])
    with r.em.loops(ranges):
        def edge(when):
            if when == "start":
                r.em.line("acc = F(0.0)")
            else:
                r.em.line(f"{out.at(env, ['c_', 'u_', 'v_'])} = acc / F({float(kh * kw)!r})")
        _window_scan(r, _pool_geo(node, x.shape, node.shape),
                     lambda: r.em.line(f"acc += {xb.at(env, ['c_', 'y_', 'x_'])}"), edge)


def t_avgpool2d_grad(r, node) -> None:
    """Each output's adjoint, divided by :math:`k_h k_w`, added to every in-range position of its window."""
    (g,) = node.inputs
    out, gb = r.out(node), r.buf(g)
    kh, kw = node.attr("kernel")
    if _pool_fast(r, node, "avgpool_grad", [g], node):
        return
    r.fill_loops(node, out, lambda e, f: "F(0.0)")
    dims, env, ranges = _map_loops(r, node, g.shape[0])
    with r.em.loops(ranges):
        def edge(when):
            if when == "start":
                r.em.line(f"acc = {gb.at(env, ['c_', 'u_', 'v_'])} / F({float(kh * kw)!r})")
        _window_scan(r, _pool_geo(node, node.shape, g.shape),
                     lambda: r.em.line(f"{out.at(env, ['c_', 'y_', 'x_'])} += acc"), edge)


# ----------------------------------------------------------------------------- per-channel statistics
def t_channel_mean(r, node) -> None:
    """:math:`\\mu_c = \\frac{1}{N}\\sum x[\\dots, c, \\dots]`, accumulated in float64 per channel."""
    (x,) = node.inputs
    _whole(r, node)
    out, xb = r.out(node), r.buf(x)
    dims = r.space(x)
    env = r.env(dims)
    rest = feat_ranges(x.shape[1:], "q")
    count = " * ".join([str(int(s)) for s in x.shape[1:]] + [r.size(d) for d in dims]) or "1"
    xv = _view(r, x, dims, _rows(r, dims), _by_channel(x.shape))
    if xv and out.literal is None:
        _call(r, "channel_mean", xv, out.var)
        return
    with r.em.loops([("c_", str(x.shape[0]))]):
        r.em.line("acc64 = 0.0")
        with r.em.loops(r.lead_ranges(dims) + rest):
            r.em.line(f"acc64 += {xb.at(env, ['c_'] + [v for v, _ in rest])}")
        r.em.line(f"{out.at({}, ['c_'])} = acc64 / ({count})")


def t_channel_spread(r, node) -> None:
    """:math:`\\bar x[\\dots, c, \\dots] = \\bar\\mu_c / N` over the like-value's whole index space."""
    (g,) = node.inputs
    gb = r.buf(g)
    count = " * ".join([str(int(s)) for s in node.shape[1:]] + [r.size(d) for d in r.dims(node)]) or "1"
    dims = r.space(node)
    ov = _view(r, node, dims, _rows(r, dims), _by_channel(node.shape)) if r.out(node) else None
    if ov and gb.literal is None and not gb.dims:
        _call(r, "channel_spread", gb.var, ov, f"F({count})")
        return
    r.fill_loops(node, r.out(node), lambda e, f: f"{gb.at(e, f[:1])} / F({count})")


# ----------------------------------------------------------------------------- feature map <-> grid
def t_to_grid(r, node) -> None:
    """:math:`g[i, j, (c, y, x)] = x[c, i p_h + y, j p_w + x]` (zero past the map: ``pad=True``)."""
    (x,) = node.inputs
    out, xb = r.out(node), r.buf(x)
    (ph, pw), (gi, gj) = node.attr("block"), node.attr("grid")
    c, h, w = x.shape
    dims = r.space(node)
    env = r.env(dims)
    ranges = r.lead_ranges(dims) + [("c_", str(c)), ("y_", str(ph)), ("x_", str(pw))]
    with r.em.loops(ranges):
        r.em.line(f"yy_ = {env[gi]} * {ph} + y_")
        r.em.line(f"xx_ = {env[gj]} * {pw} + x_")
        dst = out.at(env, [f"(c_ * {ph} + y_) * {pw} + x_"])
        src = xb.at(env, ["c_", "yy_", "xx_"])
        if node.attr("padded") != (h, w):
            src = f"({src} if yy_ < {h} and xx_ < {w} else F(0.0))"
        r.em.line(f"{dst} = {src}")


def t_from_grid(r, node) -> None:
    """:math:`y[c, r, s] = g[r // p_h, s // p_w, (c, r \\bmod p_h, s \\bmod p_w)]` (cropped)."""
    (g,) = node.inputs
    gi, gj = node.attr("grid")
    if gi in r.fixed or gj in r.fixed:
        _whole(r, node)
    (ph, pw) = node.attr("block")
    gb = r.buf(g)

    def expr(env, f):
        src = dict(env)
        src[gi], src[gj] = f"({f[1]} // {ph})", f"({f[2]} // {pw})"
        return gb.at(src, [f"({f[0]} * {ph} + {f[1]} % {ph}) * {pw} + {f[2]} % {pw}"])
    r.fill_loops(node, r.out(node), expr)


TEMPLATES = {
    "conv2d": t_conv2d, "conv2d_input_grad": t_conv2d_input_grad, "conv2d_weight_grad": t_conv2d_weight_grad,
    "maxpool2d": t_maxpool2d, "maxpool2d_grad": t_maxpool2d_grad, "maxpool2d_select": t_maxpool2d_select,
    "avgpool2d": t_avgpool2d, "avgpool2d_grad": t_avgpool2d_grad,
    "channel_mean": t_channel_mean, "channel_spread": t_channel_spread,
    "to_grid": t_to_grid, "from_grid": t_from_grid,
}
