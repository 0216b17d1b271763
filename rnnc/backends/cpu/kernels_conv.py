"""The convolution kernels of the generated modules (``imk.conv2d_fwd`` ...; :mod:`kernels_image` re-exports
them): chunk by chunk of samples, the chunks dealt to Numba's threads.

Maps are C-contiguous ``(N, C, H, W)`` (generated code passes reshapes of its buffers); output ``u`` of tap
``a`` reads row ``s u + d a - p``. Two sets of kernels, and the renderer picks one from the static geometry
(:func:`regions`; the same for the forward convolution and the weight gradient of the same ``x``, so they agree
on the columns' layout):

- ``conv2d_fwd``, ``conv2d_igrad``, ``conv2d_wgrad``: im2col columns with the zero padding
  (:mod:`conv_columns`);
- ``conv2d_fwd_regions``, ``conv2d_wgrad_regions``: products over in-range taps only (:mod:`conv_regions`),
  where at most :data:`conv_regions.REGION_MAX` of the taps are in range (the flagship's 4x4 maps: 0.44). There
  the input gradient of a stride-1 convolution is itself a forward convolution, run by ``conv2d_fwd_regions``:
  ``x̄[n, c, y, x] = Σ_{o,a,b} ḡ[n, o, y - d a + p, x - d b + p] W[o, c, a, b]``, i.e. ``ḡ`` convolved with
  :func:`flip` ``W`` at padding ``d (k - 1) - p`` (negative: a crop, which the regions handle as well).

A chunk's columns (``budget`` floats, :data:`CHUNK_FLOATS`) are filled and multiplied while they are in L2. The
forward convolution keeps them in ``cols`` (chunk-major: chunk ``[n0, n1)`` from ``n0 Q``, ``Q`` the floats of a
sample's columns) for the weight gradient of the same ``x``. Each chunk's products are one thread's call and the
weight gradient's chunks are summed in fixed parts, so results do not depend on the thread count.
"""
from __future__ import annotations

import sys

import numba
import numpy as np

from rnnc.backends.cache import tolerate_corrupt_entries
from rnnc.backends.cpu import conv_columns as full
from rnnc.backends.cpu import conv_regions as reg
from rnnc.backends.cpu.conv_columns import col2im, im2col  # noqa: F401 (kernels_image re-exports them)
from rnnc.backends.cpu.njit import jit, pjit

#: Floats of columns per chunk (1 MiB of float32, a Zen 4 core's L2). One core, batch 128, the flagship's four
#: convolutions (forward + both gradients): 65536 -> 262144 floats was 1-12% faster on each layer, measured.
CHUNK_FLOATS = 262144

#: Parts the weight gradient deals its chunks into (chunk ``j`` to part ``j % WGRAD_PARTS``), each summing its
#: own partial gradient, the parts' sums then added in part order: the threads share the work, and the result
#: does not depend on the thread count.
WGRAD_PARTS = 4


@jit
def _chunking(n_, q, budget):
    """Samples per chunk (as many as ``budget`` floats of columns hold, at least one) and the chunk count."""
    step = max(1, min(n_, budget // max(1, q)))
    return step, (n_ + step - 1) // step


@jit
def flip(w, out):
    """``out[c, o, a, b] = w[o, c, kh - 1 - a, kw - 1 - b]``: the kernel whose forward convolution (stride 1,
    padding ``d (k - 1) - p``) is the input gradient of ``w``'s."""
    o_, c_, kh, kw = w.shape
    for o in range(o_):
        for c in range(c_):
            for a in range(kh):
                for b in range(kw):
                    out[c, o, kh - 1 - a, kw - 1 - b] = w[o, c, a, b]


def regions(c_, h, w, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw) -> bool:
    """Whether the convolution of ``c_`` maps ``(h, w) -> (ho, wo)`` runs on the ``_regions`` kernels
    (:func:`conv_regions.worth`); its weight gradient then does too, and with stride 1 its input gradient (the
    flipped kernel's forward convolution multiplies the same in-range (tap, output) pairs)."""
    return bool(reg.worth(c_, h, w, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw))


# ----------------------------------------------------------------------------- full columns
@pjit
def conv2d_fwd(x, w, cols, gy, y, sh, sw, ph, pw, dh, dw, budget):
    """``y[n, o, u, v] = Σ_{c,a,b} w[o, c, a, b] x[n, c, s u + d a - p, s v + d b - p]`` (in-range positions)
    on im2col columns, chunk by chunk of samples, the columns left in ``cols`` (``N C kh kw Ho Wo`` floats,
    flat, chunk-major) for the weight gradient; ``gy`` is scratch of ``N O Ho Wo`` floats."""
    n_, c_ = x.shape[0], x.shape[1]
    o_, _, kh, kw = w.shape
    ho, wo = y.shape[2], y.shape[3]
    k, p = c_ * kh * kw, ho * wo
    w2 = w.reshape((o_, k))
    step, chunks = _chunking(n_, k * p, budget)
    for j in numba.prange(chunks):
        n0 = j * step
        n1 = min(n_, n0 + step)
        full.fwd_chunk(x[n0:n1], w2, cols[n0 * k * p:n1 * k * p].reshape((c_, kh, kw, n1 - n0, ho, wo)),
                       gy[n0 * o_ * p:n1 * o_ * p].reshape((o_, (n1 - n0) * p)), y[n0:n1], sh, sw, ph, pw, dh, dw)


@pjit
def conv2d_igrad(g, w, gm, dcols, dx, sh, sw, ph, pw, dh, dw, budget):
    """``dx[n, c, y, x] = Σ g[n, o, u, v] w[o, c, a, b]`` over ``y = s u + d a - p``, ``x = s v + d b - p``
    (the input gradient of :func:`conv2d_fwd`) as ``col2im(W^T G)``, chunk by chunk: ``G`` gathered into
    ``gm`` (``N O Ho Wo`` floats), the product into ``dcols`` (``N C kh kw Ho Wo``)."""
    n_, o_, ho, wo = g.shape
    _, c_, kh, kw = w.shape
    k, p = c_ * kh * kw, ho * wo
    wt = w.reshape((o_, k)).T
    step, chunks = _chunking(n_, k * p, budget)
    for j in numba.prange(chunks):
        n0 = j * step
        n1 = min(n_, n0 + step)
        dd = dcols[n0 * k * p:n1 * k * p].reshape((c_, kh, kw, n1 - n0, ho, wo))
        full.igrad_chunk(g[n0:n1], wt, gm[n0 * o_ * p:n1 * o_ * p], dd, dx[n0:n1], sh, sw, ph, pw, dh, dw)


@pjit
def conv2d_wgrad(g, x, cols, fill, gm, dw_out, sh, sw, ph, pw, dh, dw, budget):
    """``dw_out[o, c, a, b] = Σ_{n,u,v} g[n, o, u, v] x[n, c, s u + d a - p, s v + d b - p]`` (in-range
    positions) on the im2col columns :func:`conv2d_fwd` left in ``cols`` (``fill``: gathered here first, when
    no forward convolution of the same ``x`` did). Each of the :data:`WGRAD_PARTS` parts of the chunks sums its
    own products; the parts' sums are added in part order. ``gm`` is scratch of ``N O Ho Wo`` floats."""
    n_, o_, ho, wo = g.shape
    _, c_, kh, kw = dw_out.shape
    k, p = c_ * kh * kw, ho * wo
    step, chunks = _chunking(n_, k * p, budget)
    parts = min(chunks, WGRAD_PARTS)
    acc = np.zeros((parts, o_, k), g.dtype)
    t2 = np.empty((parts, o_, k), g.dtype)
    for part in numba.prange(parts):
        for j in range(part, chunks, parts):
            n0 = j * step
            n1 = min(n_, n0 + step)
            full.wgrad_chunk(g[n0:n1], x[n0:n1], cols[n0 * k * p:n1 * k * p].reshape((c_, kh, kw, n1 - n0, ho, wo)),
                             fill, gm[n0 * o_ * p:n1 * o_ * p], acc[part], t2[part], sh, sw, ph, pw, dh, dw)
    d2 = dw_out.reshape((o_, k))
    d2[...] = acc[0]
    for part in range(1, parts):
        d2 += acc[part]


# ----------------------------------------------------------------------------- in-range taps, by region
@pjit
def conv2d_fwd_regions(x, w, cols, gy, y, sh, sw, ph, pw, dh, dw, budget):
    """:func:`conv2d_fwd` over in-range taps only, region by region (:mod:`conv_regions`); the columns left in
    ``cols`` (``Q`` floats a sample, at most ``C kh kw Ho Wo``) for :func:`conv2d_wgrad_regions`."""
    n_, o_ = x.shape[0], w.shape[0]
    ho, wo = y.shape[2], y.shape[3]
    wr, tab, src, pos, q = reg.plan(w, x.shape[2], x.shape[3], ho, wo, sh, sw, ph, pw, dh, dw)
    p = ho * wo
    step, chunks = _chunking(n_, q, budget)
    for j in numba.prange(chunks):
        n0 = j * step
        n1 = min(n_, n0 + step)
        reg.fwd_chunk(x[n0:n1], wr, tab, src, pos, cols[n0 * q:n1 * q], gy[n0 * o_ * p:n1 * o_ * p], y[n0:n1],
                      sw, dh, dw)


@pjit
def conv2d_wgrad_regions(g, x, cols, fill, gm, dw_out, sh, sw, ph, pw, dh, dw, budget):
    """:func:`conv2d_wgrad` over in-range taps only, region by region, on the columns
    :func:`conv2d_fwd_regions` left in ``cols`` (``fill``: gathered here first); parts as there."""
    n_, o_, ho, wo = g.shape
    # the regions as the forward convolution planned them (of the weights planned, only their size is used:
    # the partial sums hold every region's weights)
    wr, tab, src, pos, q = reg.plan(dw_out, x.shape[2], x.shape[3], ho, wo, sh, sw, ph, pw, dh, dw)
    p = ho * wo
    step, chunks = _chunking(n_, q, budget)
    parts = min(chunks, WGRAD_PARTS)
    acc = np.zeros((parts, wr.shape[0]), g.dtype)
    t2 = np.empty((parts, wr.shape[0]), g.dtype)
    for part in numba.prange(parts):
        for j in range(part, chunks, parts):
            n0 = j * step
            n1 = min(n_, n0 + step)
            reg.wgrad_chunk(g[n0:n1], x[n0:n1], tab, src, pos, cols[n0 * q:n1 * q], fill, gm[n0 * o_ * p:n1 * o_ * p],
                            acc[part], t2[part], sw, dh, dw)
    dw_out[...] = 0.0
    for part in range(parts):
        reg.add_regions(acc[part], tab, dw_out)


tolerate_corrupt_entries(sys.modules[__name__])   # an unreadable Numba cache entry is a miss
