"""Precompiled Numba kernels the generated modules call for image ops (``imk.<name>`` in generated code).

Calling shared kernels instead of inlining a loop nest per node keeps the generated modules small, so Numba
compiles them in a fraction of the time; each kernel is compiled once per dtype and cached on disk.
Maps are ``(N, C, H, W)`` (every lead dim folded into ``N``). Window offsets: output ``u`` reads row
``s u + d a - p``; only in-range positions are visited. The convolutions are in :mod:`kernels_conv`, re-exported
here.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numba
import numpy as np

from rnnc.backends.cache import tolerate_corrupt_entries
from rnnc.backends.cpu import conv_columns, conv_regions, kernels_conv
from rnnc.backends.cpu.kernels_conv import (  # noqa: F401 (generated code and tests call them as imk.<name>)
    CHUNK_FLOATS,
    col2im,
    conv2d_fwd,
    conv2d_fwd_regions,
    conv2d_fwd_regions_serial,
    conv2d_fwd_serial,
    conv2d_igrad,
    conv2d_igrad_serial,
    conv2d_wgrad,
    conv2d_wgrad_regions,
    conv2d_wgrad_regions_serial,
    conv2d_wgrad_serial,
    flip,
    im2col,
)
from rnnc.backends.cpu.njit import jit as _jit
from rnnc.backends.cpu.njit import pjit as _pjit
from rnnc.backends.cpu.njit import pjit_sums as _pjit_sums

#: Changes whenever these kernels do (this file and the convolutions'): templates put it in the generated
#: source, so the module cache (keyed by the source text) never reuses a module compiled against older kernels.
VERSION = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (
    sys.modules[__name__], kernels_conv, conv_columns, conv_regions))).hexdigest()[:12]

#: Kernels that split their work over samples (or channels, or chunks of samples) with ``numba.prange``, run
#: on every Numba thread (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``), each thread writing only its own
#: samples' outputs. Generated code calls them from the plain-Python ``run`` between stage functions: a cached
#: jitted function that calls a parallel one crashes when it is loaded from the cache (numba#8578). Each also
#: has a serial twin ``<name>_serial`` (the same code, ``prange`` as ``range``) for calls inside a scan's loop.
PARALLEL = ("conv2d_fwd", "conv2d_igrad", "conv2d_wgrad", "conv2d_fwd_regions", "conv2d_wgrad_regions",
            "maxpool", "maxpool_route", "maxpool_argmax",
            "maxpool_scatter", "avgpool", "avgpool_grad",
            "channel_mean", "channel_spread", "bn_stats", "bn_apply", "bn_sums", "bn_input_grad",
            "bn_input_grad_masked")


@_pjit
def maxpool(x, out, kh, kw, sh, sw, ph, pw):
    """``out[n, c, u, v] = max`` of the in-range window, separably: each output row first takes the column-wise
    maximum of its window rows (a contiguous, vectorisable pass), then the maximum across the window columns.
    Exact for every finite input (the maximum does not depend on the order)."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = out.shape
    for n in numba.prange(n_):
        col = np.empty(w, dtype=x.dtype)
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


@_pjit
def maxpool_route(x, g, dst, kh, kw, sh, sw, ph, pw, select):
    """For each window's first maximum (row-major): ``select``: ``dst[u, v] = g[argmax]``; else
    ``dst[argmax] += g[u, v]`` (``dst`` zeroed first). The argmax is found without branches (selects on
    ``value > best``, which keeps the first of equal values), so random data costs no mispredictions."""
    n_, c_, h, w = x.shape
    ho, wo = (dst.shape[2], dst.shape[3]) if select else (g.shape[2], g.shape[3])
    for n in numba.prange(n_):
        dst[n] = 0.0
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


@_pjit
def maxpool_argmax(x, out, idx, kh, kw, sh, sw, ph, pw):
    """:func:`maxpool`, and in ``idx[n, c, u, v]`` the position ``y W + x`` in its ``(H, W)`` plane of each
    window's first maximum in row-major order (the one :func:`maxpool_route` finds; -1 for a window with no
    in-range position), for :func:`maxpool_scatter`. Separably too: the column pass keeps each column's first
    maximum, the pass across the window's columns takes a greater value, or an equal one at a smaller position
    (row-major order is the order of the positions)."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = out.shape
    for n in numba.prange(n_):
        col = np.empty(w, dtype=x.dtype)
        pos = np.empty(w, dtype=np.int64)
        for c in range(c_):
            xp, op, ip = x[n, c], out[n, c], idx[n, c]
            for u in range(ho):
                y0, y1 = max(0, sh * u - ph), min(h, sh * u - ph + kh)
                if y0 >= y1:
                    for v in range(wo):
                        op[u, v] = -np.inf
                        ip[u, v] = -1
                    continue
                for xx in range(w):
                    col[xx] = xp[y0, xx]
                    pos[xx] = y0 * w + xx
                for y in range(y0 + 1, y1):
                    for xx in range(w):
                        val = xp[y, xx]
                        take = val > col[xx]
                        col[xx] = val if take else col[xx]
                        pos[xx] = y * w + xx if take else pos[xx]
                for v in range(wo):
                    x0, x1 = max(0, sw * v - pw), min(w, sw * v - pw + kw)
                    if x0 >= x1:
                        op[u, v] = -np.inf
                        ip[u, v] = -1
                        continue
                    best, at = col[x0], pos[x0]
                    for xx in range(x0 + 1, x1):
                        val, p = col[xx], pos[xx]
                        take = (val > best) | ((val == best) & (p < at))
                        best = val if take else best
                        at = p if take else at
                    op[u, v] = best
                    ip[u, v] = at


@_pjit
def maxpool_scatter(idx, g, dst, select):
    """:func:`maxpool_route` from the positions :func:`maxpool_argmax` kept: ``select``: ``dst[u, v] =
    g[idx[u, v]]`` (0 where there is none); else ``dst[idx[u, v]] += g[u, v]`` (``dst`` zeroed first). The
    positions are this kernel's own (never a caller's), each in ``[-1, H W)``."""
    n_, c_, ho, wo = idx.shape
    for n in numba.prange(n_):
        if not select:
            dst[n] = 0.0
        for c in range(c_):
            ip = idx[n, c]
            if select:
                gf, dp = g[n, c].reshape(-1), dst[n, c]
                for u in range(ho):
                    for v in range(wo):
                        k = ip[u, v]
                        dp[u, v] = gf[k] if k >= 0 else 0.0
            else:
                df, gp = dst[n, c].reshape(-1), g[n, c]
                for u in range(ho):
                    for v in range(wo):
                        k = ip[u, v]
                        if k >= 0:
                            df[k] += gp[u, v]


@_pjit
def avgpool(x, out, kh, kw, sh, sw, ph, pw):
    """``out = sum`` of the in-range window ``/ (kh kw)`` (zero padding counts)."""
    n_, c_, h, w = x.shape
    _, _, ho, wo = out.shape
    for n in numba.prange(n_):
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


@_pjit
def avgpool_grad(g, dx, kh, kw, sh, sw, ph, pw):
    """``dx = 0``, then each ``g[u, v] / (kh kw)`` added to the in-range positions of its window."""
    n_, c_, h, w = dx.shape
    _, _, ho, wo = g.shape
    for n in numba.prange(n_):
        dx[n] = 0.0
        for c in range(c_):
            for u in range(ho):
                y0, y1 = max(0, sh * u - ph), min(h, sh * u - ph + kh)
                for v in range(wo):
                    x0, x1 = max(0, sw * v - pw), min(w, sw * v - pw + kw)
                    share = g[n, c, u, v] / (kh * kw)
                    for y in range(y0, y1):
                        for xx in range(x0, x1):
                            dx[n, c, y, xx] += share


#: Fewest work items of a per-channel sum (``channel_mean``, ``bn_stats``, ``bn_sums``): a map with fewer
#: channels splits each channel's samples into ``SUM_ITEMS // C`` fixed blocks (the flagship's 1-channel input
#: batch norm then runs on every thread too). The blocks' float64 partial sums are added in block order, and the
#: blocks depend only on the shape, so the result does not depend on the thread count; with ``C >= SUM_ITEMS``
#: there is one block per channel (one thread per channel, as before).
SUM_ITEMS = 8


@_jit
def _sum_blocks(n_, c_):
    """Sample blocks per channel of a per-channel sum over ``n_`` samples and ``c_`` channels."""
    return max(1, min(n_, SUM_ITEMS // max(c_, 1)))


@_jit
def _block(i, nb, n_):
    """Channel and samples ``[n0, n1)`` of work item ``i`` (``nb`` blocks per channel)."""
    b = i % nb
    return i // nb, b * n_ // nb, (b + 1) * n_ // nb


@_pjit
def channel_mean(x, out):
    """``out[c] = mean of x[:, c, :]`` over ``x (N, C, R)``, accumulated in float64 in four independent
    partial sums per row (so the adds pipeline instead of waiting on one another), per block of samples
    (:data:`SUM_ITEMS`), the blocks' sums added in order."""
    n_, c_, r_ = x.shape
    r4 = r_ - r_ % 4
    nb = _sum_blocks(n_, c_)
    part = np.empty(c_ * nb)
    for i in numba.prange(c_ * nb):
        c, n0, n1 = _block(i, nb, n_)
        acc = 0.0
        for n in range(n0, n1):
            s0 = s1 = s2 = s3 = 0.0
            for q in range(0, r4, 4):
                s0 += x[n, c, q]
                s1 += x[n, c, q + 1]
                s2 += x[n, c, q + 2]
                s3 += x[n, c, q + 3]
            for q in range(r4, r_):
                s0 += x[n, c, q]
            acc += (s0 + s1) + (s2 + s3)
        part[i] = acc
    for c in range(c_):
        acc = 0.0
        for b in range(nb):
            acc += part[c * nb + b]
        out[c] = acc / (n_ * r_)


@_pjit
def channel_spread(g, out, count):
    """``out[n, c, q] = g[c] / count`` over ``out (N, C, R)``."""
    n_, c_, r_ = out.shape
    for n in numba.prange(n_):
        for c in range(c_):
            share = g[c] / count
            for q in range(r_):
                out[n, c, q] = share


# ----------------------------------------------------------------------------- batch normalisation
# Maps ``(N, C, R)``; ``s = [mu; var]`` and ``sums = [sum g; sum g xhat]`` are ``(2C,)``. The per-channel sums
# run one (channel, block of samples) item per thread (``SUM_ITEMS``); the elementwise passes split over
# (sample, channel) pairs.
@_pjit_sums
def bn_stats(x, out):
    """``out[c], out[C + c]`` = mean and biased variance of ``x[:, c, :]``: ONE pass of float64 sums of
    ``x - k`` with ``k = x[0, c, 0]`` (a shifted origin: a mean far from zero does not cancel the variance),
    per block of samples (:data:`SUM_ITEMS`), the blocks' sums added in order."""
    n_, c_, r_ = x.shape
    count = n_ * r_
    nb = _sum_blocks(n_, c_)
    part = np.empty((2, c_ * nb))
    for i in numba.prange(c_ * nb):
        c, n0, n1 = _block(i, nb, n_)
        k = np.float64(x[0, c, 0]) if count > 0 else 0.0
        s1 = 0.0
        s2 = 0.0
        for n in range(n0, n1):
            for q in range(r_):
                d = np.float64(x[n, c, q]) - k
                s1 += d
                s2 += d * d
        part[0, i] = s1
        part[1, i] = s2
    for c in range(c_):
        k = np.float64(x[0, c, 0]) if count > 0 else 0.0
        s1 = 0.0
        s2 = 0.0
        for b in range(nb):
            s1 += part[0, c * nb + b]
            s2 += part[1, c * nb + b]
        m = s1 / max(count, 1)
        out[c] = k + m
        out[c_ + c] = max(s2 / max(count, 1) - m * m, 0.0)


@_pjit_sums
def bn_apply(x, s, gamma, beta, affine, eps, out):
    """``out = (x - mu) a + b`` per channel, ``a = gamma / sqrt(var + eps)``, ``b = beta`` (not ``affine``:
    ``gamma = 1, beta = 0``); the per-channel factors are rounded to the map's precision first."""
    n_, c_, r_ = x.shape
    k = np.empty((3, c_), dtype=out.dtype)
    for c in range(c_):
        inv = 1.0 / np.sqrt(np.float64(s[c_ + c]) + eps)
        k[0, c] = s[c]
        k[1, c] = gamma[c] * inv if affine else inv
        k[2, c] = beta[c] if affine else 0.0
    for p in numba.prange(n_ * c_):
        n, c = p // c_, p % c_
        m, a, b = k[0, c], k[1, c], k[2, c]
        for q in range(r_):
            out[n, c, q] = (x[n, c, q] - m) * a + b


@_pjit_sums
def bn_sums(g, x, s, eps, out):
    """``out[c] = sum g[:, c, :]``, ``out[C + c] = sum g xhat`` (float64 sums, one pass over ``g`` and ``x``,
    per block of samples (:data:`SUM_ITEMS`), the blocks' sums added in order)."""
    n_, c_, r_ = x.shape
    nb = _sum_blocks(n_, c_)
    part = np.empty((2, c_ * nb))
    for i in numba.prange(c_ * nb):
        c, n0, n1 = _block(i, nb, n_)
        m = np.float64(s[c])
        s1 = 0.0
        s2 = 0.0
        for n in range(n0, n1):
            for q in range(r_):
                gv = np.float64(g[n, c, q])
                s1 += gv
                s2 += gv * (np.float64(x[n, c, q]) - m)
        part[0, i] = s1
        part[1, i] = s2
    for c in range(c_):
        s1 = 0.0
        s2 = 0.0
        for b in range(nb):
            s1 += part[0, c * nb + b]
            s2 += part[1, c * nb + b]
        out[c] = s1
        out[c_ + c] = s2 / np.sqrt(np.float64(s[c_ + c]) + eps)


@_jit
def _input_grad_factors(x, s, sums, gamma, affine, eps, dtype):
    """Per channel ``[mu, gamma r, sum g / N, r sum(g xhat) / N]`` in the map's precision."""
    n_, c_, r_ = x.shape
    count = max(n_ * r_, 1)
    k = np.empty((4, c_), dtype=dtype)
    for c in range(c_):
        inv = 1.0 / np.sqrt(np.float64(s[c_ + c]) + eps)
        k[0, c] = s[c]
        k[1, c] = gamma[c] * inv if affine else inv
        k[2, c] = sums[c] / count
        k[3, c] = inv * sums[c_ + c] / count
    return k


@_pjit_sums
def bn_input_grad(g, x, s, sums, gamma, affine, eps, out):
    """``out = gamma r (g - sum g / N - xhat sum(g xhat) / N)``, ``r = 1 / sqrt(var + eps)``, ``N = n R``."""
    n_, c_, r_ = x.shape
    k = _input_grad_factors(x, s, sums, gamma, affine, eps, out.dtype)
    for p in numba.prange(n_ * c_):
        n, c = p // c_, p % c_
        m, a, b, d = k[0, c], k[1, c], k[2, c], k[3, c]
        for q in range(r_):
            out[n, c, q] = a * (g[n, c, q] - b - (x[n, c, q] - m) * d)


@_pjit_sums
def bn_input_grad_masked(g, x, s, sums, gamma, affine, eps, z, out):
    """:func:`bn_input_grad` times ``[z > 0]`` (a relu's gradient), in the same pass: each value as
    :func:`bn_input_grad` computes it, multiplied by 1 or 0 as the unfused product does. The loop is written out
    in both kernels: a shared per-row helper made the short rows 1.2-3x slower (a call and row views per row)."""
    n_, c_, r_ = x.shape
    k = _input_grad_factors(x, s, sums, gamma, affine, eps, out.dtype)
    for p in numba.prange(n_ * c_):
        n, c = p // c_, p % c_
        m, a, b, d = k[0, c], k[1, c], k[2, c], k[3, c]
        for q in range(r_):
            v = a * (g[n, c, q] - b - (x[n, c, q] - m) * d)
            out[n, c, q] = v * (1.0 if z[n, c, q] > 0.0 else 0.0)


tolerate_corrupt_entries(sys.modules[__name__])   # an unreadable Numba cache entry is a miss
