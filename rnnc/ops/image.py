"""Image ops on per-sample feature maps ``(C, H, W)``: convolution, pooling, per-channel batch statistics,
and the two ops that move between a feature map and an ``(i, j)`` grid of patch vectors.

Every op states its shape rule, its numpy reference and its VJP (built from ops, so gradients are graphs).
Convolution runs as im2col plus one GEMM over every sample (and loop index) at once.

Sizes (``k`` kernel, ``s`` stride, ``p`` padding, ``d`` dilation):
:math:`H_{out} = \\lfloor (H + 2p - d(k - 1) - 1) / s \\rfloor + 1`.
"""
from __future__ import annotations

import weakref

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rnnc.errors import GraphError
from rnnc.ir.node import Axis, sort_axes, user_line
from rnnc.ops.layout import align
from rnnc.ops.registry import as_node, make, register, shape_error, shared_axes


def _pair(v, name: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(pair) != 2 or any(not isinstance(k, (int, np.integer)) for k in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r} at {user_line()}")
    return int(pair[0]), int(pair[1])


def out_size(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    """:math:`\\lfloor (n + 2p - d(k - 1) - 1) / s \\rfloor + 1`."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _map_shape(op, x, inputs):
    if len(x.shape) != 3:
        raise shape_error(op, inputs, "expects a feature map of shape (C, H, W)")
    return x.shape


def _flat(x: np.ndarray, feat: int) -> tuple[np.ndarray, tuple]:
    """Fold every lead dim into one: ``(*lead, *feat) -> (N, *feat)``."""
    lead = x.shape[:x.ndim - feat]
    return x.reshape((-1,) + x.shape[x.ndim - feat:]), lead


def _windows(xp: np.ndarray, kh, kw, sh, sw, dh, dw, ho, wo) -> np.ndarray:
    """View ``(N, C, Hp, Wp) -> (N, C, Ho, Wo, kh, kw)`` of the (strided, dilated) receptive fields."""
    view = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :ho, :wo]


def _pad(x: np.ndarray, ph: int, pw: int, value=0.0) -> np.ndarray:
    if not ph and not pw:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


# ----------------------------------------------------------------------------- conv2d


def _conv_geometry(node) -> tuple:
    return node.attr("stride") + node.attr("padding") + node.attr("dilation")


def _conv_shape(inputs, attrs):
    x, w = inputs
    c, h, wd = _map_shape("conv2d", x, inputs)
    if len(w.shape) != 4 or w.shape[1] != c:
        raise shape_error("conv2d", inputs, f"expects a kernel (O, {c}, kh, kw) for {c} input channels")
    if w.axes or w.batched:
        raise shape_error("conv2d", inputs, "the kernel must be shared: no loop axes and no batch")
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    ho, wo = out_size(h, w.shape[2], sh, ph, dh), out_size(wd, w.shape[3], sw, pw, dw)
    if ho < 1 or wo < 1:
        raise shape_error("conv2d", inputs, f"the kernel does not fit: output would be {ho}x{wo}")
    return (w.shape[0], ho, wo), "float"


def _cols(x: np.ndarray, node, kh, kw, ho, wo) -> np.ndarray:
    """im2col: ``(N, C, H, W) -> (N * Ho * Wo, kh * kw * C)`` (channel-last rows: contiguous copies)."""
    sh, sw, ph, pw, dh, dw = _conv_geometry(node)
    n, c = x.shape[:2]
    xl = np.ascontiguousarray(_pad(x, ph, pw).transpose(0, 2, 3, 1))
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            cols[:, :, :, a, b, :] = xl[:, a * dh:a * dh + sh * (ho - 1) + 1:sh, b * dw:b * dw + sw * (wo - 1) + 1:sw]
    return cols.reshape(n * ho * wo, kh * kw * c)


def _kernel_rows(w: np.ndarray) -> np.ndarray:
    """``(O, C, kh, kw) -> (O, kh * kw * C)``, matching the column order of :func:`_cols`."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def conv2d_np(node, x, w):
    """:math:`y[o, u, v] = \\sum_{c, a, b} w[o, c, a, b]\\, x_p[c, s u + d a, s v + d b]` (zero padding p)."""
    xf, lead = _flat(x, 3)
    w = w.reshape(w.shape[-4:])
    o, _, kh, kw = w.shape
    _, ho, wo = node.shape
    y = _cols(xf, node, kh, kw, ho, wo) @ _kernel_rows(w).T
    return np.ascontiguousarray(y.reshape(xf.shape[0], ho, wo, o).transpose(0, 3, 1, 2)).reshape(
        lead + node.shape)


def _conv_vjp(node, g):
    x, w = node.inputs
    attrs = dict(node.attrs)
    return (make("conv2d_input_grad", [g, w], x_shape=x.shape, **attrs),
            make("conv2d_weight_grad", [g, x], w_shape=w.shape, **attrs))


def _input_grad_shape(inputs, attrs):
    g, w = inputs
    c, h, wd = attrs["x_shape"]
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    want = (w.shape[0], out_size(h, w.shape[2], sh, ph, dh), out_size(wd, w.shape[3], sw, pw, dw))
    if g.shape != want:
        raise shape_error("conv2d_input_grad", inputs, f"the output adjoint should have shape {want}")
    return attrs["x_shape"], "float"


def conv2d_input_grad_np(node, g, w):
    """:math:`\\bar x = \\mathrm{col2im}(\\bar Y W)`: the transpose of :func:`conv2d_np` in ``x``."""
    gf, lead = _flat(g, 3)
    w = w.reshape(w.shape[-4:])
    o, c, kh, kw = w.shape
    _, ho, wo = g.shape[-3:]
    sh, sw, ph, pw, dh, dw = _conv_geometry(node)
    h, wd = node.shape[1:]
    n = gf.shape[0]
    dcols = (gf.transpose(0, 2, 3, 1).reshape(-1, o) @ w.reshape(o, -1)).reshape(n, ho, wo, c, kh, kw)
    dx = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=np.result_type(g, w))
    for a in range(kh):
        for b in range(kw):
            rows = slice(a * dh, a * dh + sh * (ho - 1) + 1, sh)
            cols = slice(b * dw, b * dw + sw * (wo - 1) + 1, sw)
            dx[:, :, rows, cols] += dcols[:, :, :, :, a, b].transpose(0, 3, 1, 2)
    return dx[:, :, ph:ph + h, pw:pw + wd].reshape(lead + node.shape)


def _input_grad_vjp(node, g):
    g_out, w = node.inputs
    attrs = {k: v for k, v in node.attrs.items() if k != "x_shape"}
    return (make("conv2d", [g, w], **attrs),
            make("conv2d_weight_grad", [g_out, g], w_shape=w.shape, **attrs))


def conv2d_weight_grad_np(node, ctx, g, x):
    """:math:`\\bar W = \\sum_{n} \\bar Y_n^T \\mathrm{im2col}(x_n)` over every sample and loop index."""
    gn, xn = node.inputs
    union = ctx.in_axes[0] if len(ctx.in_axes[0]) >= len(ctx.in_axes[1]) else ctx.in_axes[1]
    batched = gn.batched or xn.batched
    g = align(g, ctx.in_axes[0], gn.batched, union, batched)
    x = align(x, ctx.in_axes[1], xn.batched, union, batched)
    lead = np.broadcast_shapes(g.shape[:-3], x.shape[:-3])
    gf, _ = _flat(np.broadcast_to(g, lead + g.shape[-3:]), 3)
    xf, _ = _flat(np.broadcast_to(x, lead + x.shape[-3:]), 3)
    o, c, kh, kw = node.shape
    _, ho, wo = gf.shape[1:]
    gm = gf.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = gm.T @ _cols(xf, node, kh, kw, ho, wo)
    return np.ascontiguousarray(dw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))


def _weight_grad_vjp(node, gw):
    g_out, x = node.inputs
    attrs = {k: v for k, v in node.attrs.items() if k != "w_shape"}
    return (make("conv2d", [x, gw], **attrs),
            make("conv2d_input_grad", [g_out, gw], x_shape=x.shape, **attrs))


def _taps_in_range(size: int, out: int, k: int, s: int, p: int, d: int) -> int:
    """Pairs (output position u, tap a) whose input position :math:`s u + d a - p` lies in ``[0, size)``."""
    return sum(1 for a in range(k) for u in range(out) if 0 <= s * u + d * a - p < size)


def _conv_flops(node) -> int:
    """:math:`2 O C R_h R_w`, with :math:`R_h` the (output row, tap row) pairs that read an input row in range
    (and :math:`R_w` the same for columns): the products with the zero padding are not counted. The same for
    the convolution and both its gradients (the same pairs of a kernel tap and a map position)."""
    first, second = node.inputs
    if node.op == "conv2d":
        (c, h, w), (o, _, kh, kw), (ho, wo) = first.shape, second.shape, node.shape[1:]
    elif node.op == "conv2d_input_grad":
        (c, h, w), (o, _, kh, kw), (ho, wo) = node.shape, second.shape, first.shape[1:]
    else:
        (c, h, w), (o, _, kh, kw), (ho, wo) = second.shape, node.shape, first.shape[1:]
    sh, sw, ph, pw, dh, dw = _conv_geometry(node)
    return 2 * o * c * _taps_in_range(h, ho, kh, sh, ph, dh) * _taps_in_range(w, wo, kw, sw, pw, dw)


register("conv2d", _conv_shape, conv2d_np, _conv_vjp, flops=_conv_flops)
register("conv2d_input_grad", _input_grad_shape, conv2d_input_grad_np, _input_grad_vjp, flops=_conv_flops)
register("conv2d_weight_grad", lambda i, a: (a["w_shape"], "float"), conv2d_weight_grad_np, _weight_grad_vjp,
         axes=shared_axes, aligned=False, flops=_conv_flops)


def conv2d(x, w, stride=1, padding=0, dilation=1):
    """2-D cross-correlation of each sample's map ``x`` (C, H, W) with kernel ``w`` (O, C, kh, kw):

    :math:`y[o, u, v] = \\sum_{c, a, b} w[o, c, a, b]\\, x[c, s u + d a - p, s v + d b - p]` (zero outside),
    output ``(O, H_out, W_out)``. Add a bias with ``y + rc.reshape(b, (O, 1, 1))``.
    """
    return make("conv2d", [x, w], stride=_pair(stride, "stride"), padding=_pair(padding, "padding"),
                dilation=_pair(dilation, "dilation"))


# ----------------------------------------------------------------------------- pooling


def _pool_shape(op):
    def rule(inputs, attrs):
        (x,) = inputs
        c, h, w = _map_shape(op, x, inputs)
        (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["padding"]
        if 2 * ph > kh or 2 * pw > kw:
            raise shape_error(op, inputs, f"padding {(ph, pw)} is more than half the kernel {(kh, kw)}")
        ho, wo = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
        if ho < 1 or wo < 1:
            raise shape_error(op, inputs, f"the window {(kh, kw)} does not fit the map {(h, w)}")
        return (c, ho, wo), "float"
    return rule


def _pool_windows(node, x, fill):
    (kh, kw), (sh, sw), (ph, pw) = node.attr("kernel"), node.attr("stride"), node.attr("padding")
    _, ho, wo = node.shape if node.op in ("maxpool2d", "avgpool2d") else node.inputs[1].shape
    return _windows(_pad(x, ph, pw, fill), kh, kw, sh, sw, 1, 1, ho, wo)


def maxpool2d_np(node, x):
    """:math:`y[c, u, v] = \\max_{a, b} x_p[c, s u + a, s v + b]`, padding with :math:`-\\infty`."""
    xf, lead = _flat(x, 3)
    out = None
    for view in _pool_offsets(node, xf, -np.inf):   # running max over the kh*kw strided views: no window copy
        out = view.copy() if out is None else np.maximum(out, view, out=out)
    return out.reshape(lead + node.shape)


def _pool_offsets(node, xf, fill):
    """The ``kh * kw`` strided views ``x_p[:, :, a::s, b::s][:, :, :Ho, :Wo]`` in window order (a, b)."""
    (kh, kw), (sh, sw), (ph, pw) = node.attr("kernel"), node.attr("stride"), node.attr("padding")
    _, ho, wo = node.shape if node.op in ("maxpool2d", "avgpool2d") else node.inputs[1].shape
    xp = _pad(xf, ph, pw, fill)
    return [xp[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] for a in range(kh) for b in range(kw)]


def avgpool2d_np(node, x):
    """:math:`y[c, u, v] = \\frac{1}{k_h k_w}\\sum_{a, b} x_p[c, s u + a, s v + b]` (zeros count: PyTorch's
    default ``count_include_pad=True``)."""
    xf, lead = _flat(x, 3)
    return _pool_windows(node, xf, 0.0).mean(axis=(4, 5)).reshape(lead + node.shape)


def _scatter_windows(node, contrib, n, c, h, w, dtype):
    """Add ``contrib`` (N, C, Ho, Wo, kh, kw) back onto the padded map positions it came from."""
    (kh, kw), (sh, sw), (ph, pw) = node.attr("kernel"), node.attr("stride"), node.attr("padding")
    ho, wo = contrib.shape[2:4]
    dx = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dtype)
    for a in range(kh):
        for b in range(kw):
            dx[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += contrib[:, :, :, :, a, b]
    return dx[:, :, ph:ph + h, pw:pw + w]


def maxpool2d_grad_np(node, x, g):
    """Route each output's adjoint to the (first) maximum of its window."""
    lead_x = x.shape[:-3]
    lead = np.broadcast_shapes(lead_x, g.shape[:-3])
    xf, _ = _flat(np.broadcast_to(x, lead + x.shape[-3:]), 3)
    gf, _ = _flat(np.broadcast_to(g, lead + g.shape[-3:]), 3)
    (_, kw), (sh, sw), (ph, pw) = node.attr("kernel"), node.attr("stride"), node.attr("padding")
    views = _pool_offsets(node, xf, -np.inf)
    best = views[0].copy()
    for view in views[1:]:
        np.maximum(best, view, out=best)
    n, c, h, w = xf.shape
    ho, wo = best.shape[2:]
    dx = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=np.result_type(x, g))
    free = np.ones(best.shape, dtype=bool)   # the first maximum of each window (argmax order) takes g
    for k, view in enumerate(views):
        hit = (view == best) & free
        free &= ~hit
        a, b = divmod(k, kw)
        dx[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += np.where(hit, gf, 0)
    return dx[:, :, ph:ph + h, pw:pw + w].reshape(lead + node.shape)


def avgpool2d_grad_np(node, g):
    """Spread each output's adjoint evenly over its window: the transpose of :func:`avgpool2d_np`."""
    gf, lead = _flat(g, 3)
    (kh, kw) = node.attr("kernel")
    n, c, ho, wo = gf.shape
    contrib = np.broadcast_to((gf / (kh * kw))[..., None, None], (n, c, ho, wo, kh, kw))
    return _scatter_windows(node, contrib, n, c, *node.shape[1:], g.dtype).reshape(lead + node.shape)


def _pool_attrs(node):
    return {k: node.attr(k) for k in ("kernel", "stride", "padding")}


register("maxpool2d", _pool_shape("maxpool2d"), maxpool2d_np,
         lambda n, g: (make("maxpool2d_grad", [n.inputs[0], g], **_pool_attrs(n)),))
register("maxpool2d_grad", lambda i, a: (i[0].shape, "float"), maxpool2d_grad_np,
         lambda n, g: (None, make("maxpool2d_select", [n.inputs[0], g], **_pool_attrs(n))))
register("avgpool2d", _pool_shape("avgpool2d"), avgpool2d_np,
         lambda n, g: (make("avgpool2d_grad", [g], x_shape=n.inputs[0].shape, **_pool_attrs(n)),))
register("avgpool2d_grad", lambda i, a: (a["x_shape"], "float"), avgpool2d_grad_np,
         lambda n, g: (make("avgpool2d", [g], **_pool_attrs(n)),))


def _maxpool_select_np(node, x, g):
    """:math:`y[c, u, v] = g[c, \\arg\\max_{window} x]`: the adjoint of ``maxpool2d_grad`` in its adjoint."""
    lead = np.broadcast_shapes(x.shape[:-3], g.shape[:-3])
    xf, _ = _flat(np.broadcast_to(x, lead + x.shape[-3:]), 3)
    gf, _ = _flat(np.broadcast_to(g, lead + g.shape[-3:]), 3)
    win = _pool_windows(node, xf, -np.inf)
    n, c, ho, wo, kh, kw = win.shape
    arg = win.reshape(n, c, ho, wo, kh * kw).argmax(-1)
    gwin = _pool_windows(node, gf, 0.0).reshape(n, c, ho, wo, kh * kw)
    return np.take_along_axis(gwin, arg[..., None], -1)[..., 0].reshape(lead + (c, ho, wo))


def _select_shape(inputs, attrs):
    return _pool_shape("maxpool2d_select")(inputs[:1], attrs)


register("maxpool2d_select", _select_shape, _maxpool_select_np, lambda n, g: (None, None))


def _pool(op, x, kernel, stride, padding):
    x = as_node(x)
    if kernel == "all":
        if len(x.shape) != 3:
            raise shape_error(op, [x], "global pooling expects a feature map (C, H, W)")
        kernel, stride, padding = x.shape[1:], 1, 0
    kernel = _pair(kernel, "kernel")
    stride = kernel if stride is None else _pair(stride, "stride")
    return make(op, [x], kernel=kernel, stride=stride, padding=_pair(padding, "padding"))


def maxpool2d(x, kernel, stride=None, padding=0):
    """Max pooling over ``kernel`` windows (``"all"``: global), stride defaulting to the kernel."""
    return _pool("maxpool2d", x, kernel, stride, padding)


def avgpool2d(x, kernel, stride=None, padding=0):
    """Average pooling over ``kernel`` windows (``"all"``: global average pooling, output (C, 1, 1))."""
    return _pool("avgpool2d", x, kernel, stride, padding)


# ----------------------------------------------------------------------------- per-channel batch statistics


def _channel_shape(inputs, attrs):
    (x,) = inputs
    if not x.shape:
        raise shape_error("channel_mean", inputs, "needs a channel dimension (C, ...)")
    return x.shape[:1], "float"


def channel_mean_np(node, ctx, x):
    """:math:`\\mu_c = \\frac{1}{N} \\sum x[\\dots, c, \\dots]` over loop axes, batch and spatial dims."""
    lead = len(ctx.in_axes[0]) + int(node.inputs[0].batched)
    return x.mean(axis=tuple(k for k in range(x.ndim) if k != lead))


def _count(node, ctx) -> int:
    n = int(np.prod(node.shape[1:])) * (ctx.batch if node.batched else 1)
    return n * int(np.prod([ctx.sizes[a] for a in node.axes]))


def channel_spread_np(node, ctx, g):
    """:math:`\\bar x[\\dots, c, \\dots] = \\bar\\mu_c / N`, broadcast to the input's layout."""
    lead = tuple(ctx.sizes[a] for a in ctx.out_axes) + ((ctx.batch,) if node.batched else ())
    g = g.reshape((1,) * len(lead) + g.shape + (1,) * (len(node.shape) - 1))
    return np.broadcast_to(g / _count(node, ctx), lead + node.shape)


register("channel_mean", _channel_shape, channel_mean_np, lambda n, g: (channel_spread(g, n.inputs[0]),),
         axes=shared_axes, aligned=False)
register("channel_spread", lambda i, a: (a["like_shape"], "float"), channel_spread_np,
         lambda n, g: (make("channel_mean", [g]),),
         axes=lambda i, a: (a["like_axes"], a["like_batched"]), aligned=False)


def channel_spread(g, like):
    """:math:`g_c / N` broadcast over the layout of ``like`` (C, ...): the adjoint of :func:`channel_mean`,
    with :math:`N` the count per channel of ``like`` (loop indices × samples × pixels)."""
    return make("channel_spread", [g], like_shape=like.shape, like_axes=like.axes, like_batched=like.batched)


def channel_mean(x):
    """Mean per channel (the first feature dim) over every loop axis, the batch and the other feature
    dims: the batch statistic of batch normalisation, :math:`\\mu_c = \\frac{1}{N}\\sum_{n, h, w} x_{n,c,h,w}`.
    The result is shared by every sample (no batch, no loop axes)."""
    return make("channel_mean", [x])


# ----------------------------------------------------------------------------- feature map <-> patch grid


def _grid_axes(inputs, attrs):
    return sort_axes(attrs["grid"]), inputs[0].batched


def _to_grid_shape(inputs, attrs):
    (x,) = inputs
    c, h, w = _map_shape("to_grid", x, inputs)
    if x.axes:
        raise shape_error("to_grid", inputs, f"expects an axis-free feature map, got one on axes {x.axes}")
    ph, pw = attrs["block"]
    return (c * ph * pw,), "float"


def _grid_order(node, grid):
    """Permutation from (rows, cols) to the canonical order of the grid axes."""
    canon = sort_axes(grid)
    return tuple(grid.index(a) for a in canon)


def to_grid_np(node, ctx, x):
    """:math:`g[i, j] = \\mathrm{vec}(x[:, i p_h:(i+1) p_h, j p_w:(j+1) p_w])` (C-order: channel, row, col)."""
    (ph, pw), (hh, ww) = node.attr("block"), node.attr("padded")
    batched = node.inputs[0].batched
    xb = x if batched else x[None]
    c, h, w = xb.shape[1:]
    if (hh, ww) != (h, w):
        xb = np.pad(xb, ((0, 0), (0, 0), (0, hh - h), (0, ww - w)))
    n, rows, cols = xb.shape[0], hh // ph, ww // pw
    g = xb.reshape(n, c, rows, ph, cols, pw).transpose(2, 4, 0, 1, 3, 5).reshape(rows, cols, n, c * ph * pw)
    order = _grid_order(node, node.attr("grid"))
    g = g.transpose(order + (2, 3))
    return g if batched else g[:, :, 0]


def _from_grid_shape(inputs, attrs):
    (g,) = inputs
    ph, pw = attrs["block"]
    if len(g.shape) != 1 or g.shape[0] % (ph * pw):
        raise shape_error("from_grid", inputs, f"expects patch vectors of length C * {ph} * {pw}")
    rows, cols = attrs["sizes"]
    (h, w) = attrs["crop"] or (rows * ph, cols * pw)
    return (g.shape[0] // (ph * pw), h, w), "float"


def _from_grid_axes(inputs, attrs):
    (g,) = inputs
    if set(g.axes) != set(attrs["grid"]):
        raise GraphError(f"from_grid: the value is on axes {g.axes}, expected exactly {attrs['grid']} "
                         f"at {user_line()}")
    return (), g.batched


def from_grid_np(node, ctx, g):
    """Inverse of :func:`to_grid_np`: :math:`y[:, i p_h:(i+1) p_h, j p_w:(j+1) p_w] = \\mathrm{unvec}(g[i, j])`."""
    grid, (ph, pw) = node.attr("grid"), node.attr("block")
    canon = list(ctx.in_axes[0])  # the array's axes, in canonical order
    g = g.transpose((canon.index(grid[0]), canon.index(grid[1])) + tuple(range(2, g.ndim)))
    batched = node.inputs[0].batched
    g = g if batched else g[:, :, None]
    rows, cols, n, f = g.shape
    c = f // (ph * pw)
    y = g.reshape(rows, cols, n, c, ph, pw).transpose(2, 3, 0, 4, 1, 5).reshape(n, c, rows * ph, cols * pw)
    h, w = node.shape[1:]
    y = y[:, :, :h, :w]
    return y if batched else y[0]


def _to_grid_vjp(node, g):
    x = node.inputs[0]
    crop = x.shape[1:] if node.attr("padded") != x.shape[1:] else None
    return (from_grid(g, node.attr("block"), node.attr("grid"), crop=crop),)


def _from_grid_vjp(node, g):
    return (to_grid(g, node.attr("block"), node.attr("grid"), pad=node.attr("crop") is not None),)


register("to_grid", _to_grid_shape, to_grid_np, _to_grid_vjp, axes=_grid_axes, aligned=False,
         cuda_reuses_cpu=True)
register("from_grid", _from_grid_shape, from_grid_np, _from_grid_vjp, axes=_from_grid_axes, aligned=False,
         cuda_reuses_cpu=True)


def to_grid(x, block, axes, pad: bool = False):
    """Cut each sample's map ``x`` (C, H, W) into non-overlapping ``block = (ph, pw)`` patches and lay them
    on the grid ``axes = (i, j)`` (rows, columns): :math:`g[i, j] = \\mathrm{vec}(x[:, i p_h:(i+1) p_h,
    j p_w:(j+1) p_w]) \\in \\mathbb{R}^{C p_h p_w}`. The grid has ``H / ph`` by ``W / pw`` cells; these static
    sizes travel with the node, so no input needs to give them. A map that the block does not divide is
    refused, or zero-padded at the bottom and right with ``pad=True``."""
    x = as_node(x)
    ph, pw = _pair(block, "block")
    i, j = _grid_pair(axes)
    if len(x.shape) != 3:
        raise shape_error("to_grid", [x], "expects a feature map of shape (C, H, W)")
    h, w = x.shape[1:]
    if (h % ph or w % pw) and not pad:
        raise shape_error("to_grid", [x], f"the map {h}x{w} is not divisible into {ph}x{pw} blocks; pass "
                          f"pad=True to zero-pad it to {-(-h // ph) * ph}x{-(-w // pw) * pw}")
    hh, ww = -(-h // ph) * ph, -(-w // pw) * pw
    _declare(i, hh // ph)
    _declare(j, ww // pw)
    return make("to_grid", [x], block=(ph, pw), grid=(i, j), padded=(hh, ww),
                static_sizes=((i, hh // ph), (j, ww // pw)))


def from_grid(g, block=(1, 1), axes=None, crop=None, sizes=None):
    """Put the patch vectors of grid value ``g`` (on axes ``(i, j)``: rows, columns) back into a map
    ``(C', I ph, J pw)`` (cropped to ``crop = (H, W)`` when given): the inverse of :func:`to_grid`. With the
    default ``block=(1, 1)`` each cell's vector becomes one pixel: ``(C', I, J)``. The grid sizes ``(I, J)``
    are the static sizes that :func:`to_grid` gave the axes, or ``sizes=``."""
    g = as_node(g)
    i, j = _grid_pair(axes if axes is not None else g.axes)
    sizes = _pair(sizes, "sizes") if sizes is not None else _static_sizes(g, (i, j))
    return make("from_grid", [g], block=_pair(block, "block"), grid=(i, j), sizes=sizes,
                crop=None if crop is None else _pair(crop, "crop"))


def _grid_pair(axes) -> tuple[Axis, Axis]:
    axes = tuple(axes)
    if len(axes) != 2 or not all(isinstance(a, Axis) for a in axes) or axes[0] is axes[1]:
        raise ValueError(f"a grid needs two distinct loop axes (rows, columns), got {axes!r} at {user_line()}")
    return axes


_STATIC: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _declare(axis: Axis, size: int) -> None:
    """Record an axis's static size; one axis cannot get two sizes."""
    old = _STATIC.setdefault(axis, size)
    if old != size:
        raise GraphError(f"axis {axis.name!r} already has static size {old} from another to_grid; this map "
                         f"gives {size}; use fresh axes for each grid at {user_line()}")


def _static_sizes(g, grid) -> tuple[int, int]:
    """Grid sizes that :func:`to_grid` declared for the axes."""
    missing = [a.name for a in grid if a not in _STATIC]
    if missing:
        raise GraphError(f"from_grid: the sizes of axes {missing} are not static (no to_grid made them); pass "
                         f"sizes=(I, J) at {user_line()}")
    return _STATIC[grid[0]], _STATIC[grid[1]]
