"""Precompiled Numba kernels the generated modules call for image ops (``imk.<name>`` in generated code).

Calling shared kernels instead of inlining a loop nest per node keeps the generated modules small, so Numba
compiles them in a fraction of the time; each kernel is compiled once per dtype and cached on disk.
Maps are ``(N, C, H, W)`` (every lead dim folded into ``N``); ``cols`` are ``(C, kh, kw, N, Ho, Wo)``.
Window offsets: output ``u`` reads row ``s u + d a - p``; only in-range positions are visited.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numba
import numpy as np

#: Changes whenever this file does: templates put it in the generated source, so the module cache (keyed by
#: the source text) never reuses a module compiled against an older version of these kernels.
VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _span(off, s, size, n):
    """Outputs ``u`` in ``range(lo, hi)`` with ``0 <= s u + off < size``."""
    lo = max(0, (-off + s - 1) // s)
    hi = min(n, (size - 1 - off) // s + 1)
    return lo, hi


@_jit
def im2col(x, cols, sh, sw, ph, pw, dh, dw):
    """``cols[c, a, b, n, u, v] = x[n, c, s u + d a - p, s v + d b - p]`` (in-range positions only), one plane
    ``(c, a, b)`` at a time so the writes run through ``cols`` in order."""
    n_, c_, h, w = x.shape
    _, kh, kw, _, ho, wo = cols.shape
    for c in range(c_):
        for a in range(kh):
            u0, u1 = _span(dh * a - ph, sh, h, ho)
            for b in range(kw):
                v0, v1 = _span(dw * b - pw, sw, w, wo)
                off = dw * b - pw
                for n in range(n_):
                    for u in range(u0, u1):
                        y = sh * u + dh * a - ph
                        for v in range(v0, v1):
                            cols[c, a, b, n, u, v] = x[n, c, y, sw * v + off]


@_jit
def col2im(cols, dx, sh, sw, ph, pw, dh, dw):
    """``dx = 0``, then ``dx[n, c, s u + d a - p, s v + d b - p] += cols[c, a, b, n, u, v]``."""
    n_, c_, h, w = dx.shape
    _, kh, kw, _, ho, wo = cols.shape
    dx[...] = 0.0
    for n in range(n_):
        for c in range(c_):
            for a in range(kh):
                u0, u1 = _span(dh * a - ph, sh, h, ho)
                for b in range(kw):
                    v0, v1 = _span(dw * b - pw, sw, w, wo)
                    for u in range(u0, u1):
                        y = sh * u + dh * a - ph
                        for v in range(v0, v1):
                            dx[n, c, y, sw * v + dw * b - pw] += cols[c, a, b, n, u, v]


@_jit
def swap01(src, dst):
    """``dst[j, i] = src[i, j]`` over the first two dims of 4-D arrays."""
    n0, n1, h, w = src.shape
    for i in range(n0):
        for j in range(n1):
            for u in range(h):
                for v in range(w):
                    dst[j, i, u, v] = src[i, j, u, v]


@_jit
def maxpool(x, out, kh, kw, sh, sw, ph, pw):
    """``out[n, c, u, v] = max`` of the in-range window, separably: each output row first takes the column-wise
    maximum of its window rows (a contiguous, vectorisable pass), then the maximum across the window columns.
    Exact for every finite input (the maximum does not depend on the order)."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = out.shape
    col = np.empty(w, dtype=x.dtype)
    for n in range(n_):
        for c in range(c_):
            for u in range(ho):
                y0, y1 = max(0, sh * u - ph), min(h, sh * u - ph + kh)
                if y0 >= y1:
                    for v in range(wo):
                        out[n, c, u, v] = -np.inf
                    continue
                for xx in range(w):
                    col[xx] = x[n, c, y0, xx]
                for y in range(y0 + 1, y1):
                    for xx in range(w):
                        col[xx] = max(col[xx], x[n, c, y, xx])
                for v in range(wo):
                    x0, x1 = max(0, sw * v - pw), min(w, sw * v - pw + kw)
                    best = -np.inf
                    for xx in range(x0, x1):
                        best = max(best, col[xx])
                    out[n, c, u, v] = best


@_jit
def maxpool_route(x, g, dst, kh, kw, sh, sw, ph, pw, select):
    """For each window's first maximum (row-major): ``select``: ``dst[u, v] = g[argmax]``; else
    ``dst[argmax] += g[u, v]`` (``dst`` zeroed first). The argmax is found without branches (selects on
    ``value > best``, which keeps the first of equal values), so random data costs no mispredictions."""
    n_, c_, h, w = x.shape
    ho, wo = (dst.shape[2], dst.shape[3]) if select else (g.shape[2], g.shape[3])
    dst[...] = 0.0
    for n in range(n_):
        for c in range(c_):
            for u in range(ho):
                y0, y1 = max(0, sh * u - ph), min(h, sh * u - ph + kh)
                if y0 >= y1:
                    continue
                for v in range(wo):
                    x0, x1 = max(0, sw * v - pw), min(w, sw * v - pw + kw)
                    if x0 >= x1:
                        continue
                    by, bx, best = y0, x0, x[n, c, y0, x0]
                    for y in range(y0, y1):
                        for xx in range(x0, x1):
                            val = x[n, c, y, xx]
                            take = val > best
                            best = val if take else best
                            by = y if take else by
                            bx = xx if take else bx
                    if select:
                        dst[n, c, u, v] = g[n, c, by, bx]
                    else:
                        dst[n, c, by, bx] += g[n, c, u, v]


@_jit
def avgpool(x, out, kh, kw, sh, sw, ph, pw):
    """``out = sum`` of the in-range window ``/ (kh kw)`` (zero padding counts)."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = out.shape
    for n in range(n_):
        for c in range(c_):
            for u in range(ho):
                y0, y1 = max(0, sh * u - ph), min(h, sh * u - ph + kh)
                for v in range(wo):
                    x0, x1 = max(0, sw * v - pw), min(w, sw * v - pw + kw)
                    acc = 0.0
                    for y in range(y0, y1):
                        for xx in range(x0, x1):
                            acc += x[n, c, y, xx]
                    out[n, c, u, v] = acc / (kh * kw)


@_jit
def avgpool_grad(g, dx, kh, kw, sh, sw, ph, pw):
    """``dx = 0``, then each ``g[u, v] / (kh kw)`` added to the in-range positions of its window."""
    n_, c_, h, w = dx.shape
    _, _, ho, wo = g.shape
    dx[...] = 0.0
    for n in range(n_):
        for c in range(c_):
            for u in range(ho):
                y0, y1 = max(0, sh * u - ph), min(h, sh * u - ph + kh)
                for v in range(wo):
                    x0, x1 = max(0, sw * v - pw), min(w, sw * v - pw + kw)
                    share = g[n, c, u, v] / (kh * kw)
                    for y in range(y0, y1):
                        for xx in range(x0, x1):
                            dx[n, c, y, xx] += share


@_jit
def channel_mean(x, out):
    """``out[c] = mean of x[:, c, :]`` over ``x (N, C, R)``, accumulated in float64 in four independent
    partial sums per row (so the adds pipeline instead of waiting on one another)."""
    n_, c_, r_ = x.shape
    r4 = r_ - r_ % 4
    for c in range(c_):
        acc = 0.0
        for n in range(n_):
            s0 = s1 = s2 = s3 = 0.0
            for q in range(0, r4, 4):
                s0 += x[n, c, q]
                s1 += x[n, c, q + 1]
                s2 += x[n, c, q + 2]
                s3 += x[n, c, q + 3]
            for q in range(r4, r_):
                s0 += x[n, c, q]
            acc += (s0 + s1) + (s2 + s3)
        out[c] = acc / (n_ * r_)


@_jit
def channel_spread(g, out, count):
    """``out[n, c, q] = g[c] / count`` over ``out (N, C, R)``."""
    n_, c_, r_ = out.shape
    for n in range(n_):
        for c in range(c_):
            share = g[c] / count
            for q in range(r_):
                out[n, c, q] = share


# ----------------------------------------------------------------------------- convolution, cache-blocked
#: Floats of im2col columns per chunk (256 KiB of float32): a chunk's columns stay in L2 between the im2col
#: fill and the GEMM (or between the GEMM and the col2im scatter) instead of going through memory.
CHUNK_FLOATS = 65536


@_jit
def rows_per_chunk(n_, k, p, budget):
    """Samples per chunk: as many ``(K, P)`` column blocks as fit ``budget`` floats (at least one)."""
    return max(1, min(n_, budget // max(1, k * p)))


@_jit
def conv2d_fwd(x, w, cols, gy, y, sh, sw, ph, pw, dh, dw, budget):
    """``y = conv2d(x, w)`` chunk by chunk of samples: im2col of the chunk into its slice of ``cols`` (flat,
    chunk-major: chunk ``[n0, n1)`` holds ``(K, (n1 - n0) P)`` from offset ``n0 K P``, kept for the weight
    gradient), one GEMM ``W (O, K) @ cols_chunk`` into the scratch ``gy``, then ``(O, n, P) -> (n, O, P)``."""
    n_, c_ = x.shape[0], x.shape[1]
    o_, _, kh, kw = w.shape
    ho, wo = y.shape[2], y.shape[3]
    k, p = c_ * kh * kw, ho * wo
    w2 = w.reshape((o_, k))
    step = rows_per_chunk(n_, k, p, budget)
    for n0 in range(0, n_, step):
        n1 = min(n_, n0 + step)
        m = (n1 - n0) * p
        cc = cols[n0 * k * p:n0 * k * p + k * m]
        im2col(x[n0:n1], cc.reshape((c_, kh, kw, n1 - n0, ho, wo)), sh, sw, ph, pw, dh, dw)
        g = gy[:o_ * m].reshape((o_, m))
        np.dot(w2, cc.reshape((k, m)), g)
        swap01(g.reshape((o_, n1 - n0, ho, wo)), y[n0:n1])


@_jit
def conv2d_igrad(g, w, gm, dcols, dx, sh, sw, ph, pw, dh, dw, budget):
    """``dx = col2im(W^T G)`` chunk by chunk: ``G`` of the chunk as ``(O, n P)``, one GEMM into the chunk-sized
    scratch ``dcols``, then its scatter-add into the chunk's samples of ``dx``."""
    n_, o_, ho, wo = g.shape
    _, c_, kh, kw = w.shape
    k, p = c_ * kh * kw, ho * wo
    wt = w.reshape((o_, k)).T
    step = rows_per_chunk(n_, k, p, budget)
    for n0 in range(0, n_, step):
        n1 = min(n_, n0 + step)
        m = (n1 - n0) * p
        gg = gm[:o_ * m]
        swap01(g[n0:n1], gg.reshape((o_, n1 - n0, ho, wo)))
        dd = dcols[:k * m]
        np.dot(wt, gg.reshape((o_, m)), dd.reshape((k, m)))
        col2im(dd.reshape((c_, kh, kw, n1 - n0, ho, wo)), dx[n0:n1], sh, sw, ph, pw, dh, dw)


@_jit
def conv2d_wgrad(g, x, cols, fill, gm, tmp, dw_out, sh, sw, ph, pw, dh, dw, budget):
    """``dW = sum over chunks of G_chunk (O, n P) @ cols_chunk^T``, the columns laid out as :func:`conv2d_fwd`
    leaves them (``fill``: compute them here first, when no forward convolution of the same ``x`` did)."""
    n_, o_, ho, wo = g.shape
    _, c_, kh, kw = dw_out.shape
    k, p = c_ * kh * kw, ho * wo
    d2 = dw_out.reshape((o_, k))
    t2 = tmp[:o_ * k].reshape((o_, k))
    d2[...] = 0.0
    step = rows_per_chunk(n_, k, p, budget)
    for n0 in range(0, n_, step):
        n1 = min(n_, n0 + step)
        m = (n1 - n0) * p
        cc = cols[n0 * k * p:n0 * k * p + k * m]
        if fill:
            im2col(x[n0:n1], cc.reshape((c_, kh, kw, n1 - n0, ho, wo)), sh, sw, ph, pw, dh, dw)
        gg = gm[:o_ * m]
        swap01(g[n0:n1], gg.reshape((o_, n1 - n0, ho, wo)))
        np.dot(gg.reshape((o_, m)), cc.reshape((k, m)).T, t2)
        d2 += t2
