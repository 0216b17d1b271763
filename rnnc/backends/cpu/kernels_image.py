"""Precompiled Numba kernels the generated modules call for image ops (``imk.<name>`` in generated code).

Calling shared kernels instead of inlining a loop nest per node keeps the generated modules small, so Numba
compiles them in a fraction of the time; each kernel is compiled once per dtype and cached on disk.
Maps are ``(N, C, H, W)`` (every lead dim folded into ``N``); ``cols`` are ``(C, kh, kw, N, Ho, Wo)``.
Window offsets: output ``u`` reads row ``s u + d a - p``; only in-range positions are visited.
"""
from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import numba
import numpy as np

from rnnc.backends.cache import tolerate_corrupt_entries
from rnnc.backends.cpu import gemm

#: Changes whenever this file does: templates put it in the generated source, so the module cache (keyed by
#: the source text) never reuses a module compiled against an older version of these kernels.
VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

#: Kernels that split their work over samples (or channels, or chunks of samples) with ``numba.prange``, run
#: on every Numba thread (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``), each thread writing only its own
#: samples' outputs. Generated code calls them from the plain-Python ``run`` between stage functions: a cached
#: jitted function that calls a parallel one crashes when it is loaded from the cache (numba#8578). Each also
#: has a serial twin ``<name>_serial`` (the same code, ``prange`` as ``range``) for calls inside a scan's loop.
PARALLEL = ("conv2d_fwd", "conv2d_igrad", "conv2d_wgrad", "maxpool", "maxpool_route", "maxpool_argmax",
            "maxpool_scatter", "avgpool", "avgpool_grad",
            "channel_mean", "channel_spread", "bn_stats", "bn_apply", "bn_sums", "bn_input_grad")


def _pjit(fn, **options):
    """The parallel kernel ``fn``; its serial twin goes into this module as ``<name>_serial``."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                              fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_serial"      # its own cache files
    globals()[twin.__name__] = numba.njit(cache=True, nogil=True, error_model="numpy", **options)(twin)
    return numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True, **options)(fn)


def _pjit_sums(fn):
    """:func:`_pjit` with reassociation allowed, so LLVM vectorises a loop's float64 sums (one channel's sums
    stay in one thread, in the same order whatever the thread count)."""
    return _pjit(fn, fastmath={"reassoc"})


#: Parts the blocked ``conv2d_wgrad`` deals its chunks into (chunk ``j`` to part ``j % WGRAD_PARTS``), each
#: summing its own partial gradient, the parts' sums then added in part order: the threads share the work,
#: and the result does not depend on the thread count. Its ``tmp`` buffer holds ``2 WGRAD_PARTS O K`` floats.
WGRAD_PARTS = 4


@_jit
def _span(off, s, size, n):
    """Outputs ``u`` in ``range(lo, hi)`` with ``0 <= s u + off < size``."""
    lo = max(0, (-off + s - 1) // s)
    hi = min(n, (size - 1 - off) // s + 1)
    return lo, hi


# Copies run through 1-D views indexed from 0 (``dst = a[i:j]; dst[v] = src[v]``): LLVM then vectorises them,
# while ``a[i + d]`` with a run-time offset keeps Numba's negative-index check in the loop (20x slower, measured).
@_jit
def _run(dst, src, add):
    """``dst = src`` (or ``dst += src`` with ``add``) over two equal-length 1-D views."""
    if add:
        for i in range(dst.shape[0]):
            dst[i] += src[i]
    else:
        for i in range(dst.shape[0]):
            dst[i] = src[i]


@_jit
def _clear_edges(cf, dst0, u0, u1, v0, v1, wo):
    """Zero the columns outside ``[v0, v1)`` of rows ``u0..u1`` of one ``(Ho, Wo)`` plane at ``dst0``."""
    for u in range(u0, u1):
        r = dst0 + u * wo
        for v in range(v0):
            cf[r + v] = 0.0
        for v in range(v1, wo):
            cf[r + v] = 0.0


@_jit
def _window_runs(x, cols, sh, sw, ph, pw, dh, dw, gather):
    """Move data between a map ``x (N, C, H, W)`` and its columns ``cols (C, kh, kw, N, Ho, Wo)``, in-range
    positions only, one plane ``(c, a, b)`` at a time (so ``cols`` is walked in order): ``gather`` copies
    ``x`` into ``cols`` (im2col), else ``cols`` is added into ``x`` (col2im). With stride 1 at equal widths a
    sample's rows are one contiguous run in both arrays, moved at once; the columns of ``cols`` outside the
    window's range are zeroed (after the copy, where it wrapped around a row's end; before the add, so the
    wrapped positions add nothing)."""
    n_, c_, h, w = x.shape
    _, kh, kw, _, ho, wo = cols.shape
    xf, cf = x.reshape(-1), cols.reshape(-1)
    one_run = sh == 1 and sw == 1 and w == wo
    for c in range(c_):
        for a in range(kh):
            u0, u1 = _span(dh * a - ph, sh, h, ho)
            for b in range(kw):
                v0, v1 = _span(dw * b - pw, sw, w, wo)
                if u1 <= u0 or v1 <= v0:
                    continue
                oy, ox = dh * a - ph, dw * b - pw
                for n in range(n_):
                    dst0 = (((c * kh + a) * kw + b) * n_ + n) * ho * wo
                    src0 = (n * c_ + c) * h * w + oy * w + ox
                    if one_run:
                        lo, hi = u0 * wo + v0, (u1 - 1) * wo + v1
                        if gather:
                            _run(cf[dst0 + lo:dst0 + hi], xf[src0 + lo:src0 + hi], False)
                            _clear_edges(cf, dst0, u0, u1, v0, v1, wo)
                        else:
                            _clear_edges(cf, dst0, u0, u1, v0, v1, wo)
                            _run(xf[src0 + lo:src0 + hi], cf[dst0 + lo:dst0 + hi], True)
                        continue
                    for u in range(u0, u1):
                        r, q = dst0 + u * wo, src0 + sh * u * w
                        cv, xv = cf[r + v0:r + v1], xf[q + sw * v0:q + sw * (v1 - 1) + 1:sw]
                        if gather:
                            _run(cv, xv, False)
                        else:
                            _run(xv, cv, True)


@_jit
def im2col(x, cols, sh, sw, ph, pw, dh, dw):
    """``cols[c, a, b, n, u, v] = x[n, c, s u + d a - p, s v + d b - p]`` (in-range positions only; the rest
    of ``cols`` is left as the runtime keeps it, zero)."""
    _window_runs(x, cols, sh, sw, ph, pw, dh, dw, True)


@_jit
def col2im(cols, dx, sh, sw, ph, pw, dh, dw):
    """``dx = 0``, then ``dx[n, c, s u + d a - p, s v + d b - p] += cols[c, a, b, n, u, v]`` (``cols`` is
    scratch: its out-of-range columns are zeroed on the way)."""
    dx[...] = 0.0
    _window_runs(dx, cols, sh, sw, ph, pw, dh, dw, False)


@_jit
def swap01(src, dst):
    """``dst[j, i] = src[i, j]`` over the first two dims of 4-D arrays."""
    n0, n1, h, w = src.shape
    for i in range(n0):
        for j in range(n1):
            for u in range(h):
                for v in range(w):
                    dst[j, i, u, v] = src[i, j, u, v]


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


@_pjit_sums
def bn_input_grad(g, x, s, sums, gamma, affine, eps, out):
    """``out = gamma r (g - sum g / N - xhat sum(g xhat) / N)``, ``r = 1 / sqrt(var + eps)``, ``N = n R``."""
    n_, c_, r_ = x.shape
    count = max(n_ * r_, 1)
    k = np.empty((4, c_), dtype=out.dtype)
    for c in range(c_):
        inv = 1.0 / np.sqrt(np.float64(s[c_ + c]) + eps)
        k[0, c] = s[c]
        k[1, c] = gamma[c] * inv if affine else inv
        k[2, c] = sums[c] / count
        k[3, c] = inv * sums[c_ + c] / count
    for p in numba.prange(n_ * c_):
        n, c = p // c_, p % c_
        m, a, b, d = k[0, c], k[1, c], k[2, c], k[3, c]
        for q in range(r_):
            out[n, c, q] = a * (g[n, c, q] - b - (x[n, c, q] - m) * d)


# ----------------------------------------------------------------------------- convolution, cache-blocked
#: Floats of im2col columns per chunk (256 KiB of float32): a chunk's columns stay in L2 between the im2col
#: fill and the GEMM (or between the GEMM and the col2im scatter) instead of going through memory.
CHUNK_FLOATS = 65536


@_jit
def rows_per_chunk(n_, k, p, budget):
    """Samples per chunk: as many ``(K, P)`` column blocks as fit ``budget`` floats (at least one)."""
    return max(1, min(n_, budget // max(1, k * p)))


# The chunk bodies are separate (serial) functions: Numba cannot cache a parallel function whose parallel loop
# calls np.dot itself (the BLAS pointer becomes a "dynamic global"), while a call to a cached function is fine.
# Their products are ``gemm.dot`` calls (panels on OpenBLAS's small-matrix kernels), not ``np.dot``: on one
# core, at the flagship's chunk shapes, 1.2-3x faster for the forward and input-gradient products (e.g. the
# first layer's (16 x 9) @ (9 x 7056) 43 -> 21 us, the 64 -> 128 layer's (128 x 576) @ (576 x 112) 175 -> 148
# us). The weight gradient's (O, n P) @ (n P, K) was level or slower in panels except with a short K (the first
# layer's K = 9: 71 -> 23 us), so it takes them only up to ``WGRAD_GEMM_K``. A chunk's product is one thread's
# call, so the bits do not depend on the thread count (they differ from np.dot's in the last place).
#: Largest ``K = C kh kw`` whose weight-gradient product runs as ``gemm.dot`` panels (beyond it, ``np.dot``).
WGRAD_GEMM_K = 32


@_jit
def _fwd_chunk(x, w2, cc, g, y, sh, sw, ph, pw, dh, dw):
    """``y = swap01(W (O, K) @ im2col(x))`` of one chunk of samples."""
    n = x.shape[0]
    im2col(x, cc, sh, sw, ph, pw, dh, dw)
    gemm.dot(w2, cc.reshape((cc.shape[0] * cc.shape[1] * cc.shape[2], -1)), g)
    swap01(g.reshape((g.shape[0], n, y.shape[2], y.shape[3])), y)


@_pjit
def conv2d_fwd(x, w, cols, gy, y, sh, sw, ph, pw, dh, dw, budget):
    """``y = conv2d(x, w)`` chunk by chunk of samples, the chunks shared by the threads:
    im2col of the chunk into its slice of ``cols`` (flat, chunk-major: chunk ``[n0, n1)`` holds
    ``(K, (n1 - n0) P)`` from offset ``n0 K P``, kept for the weight gradient), one GEMM
    ``W (O, K) @ cols_chunk`` into the chunk's slice of the scratch ``gy``, then ``(O, n, P) -> (n, O, P)``."""
    n_, c_ = x.shape[0], x.shape[1]
    o_, _, kh, kw = w.shape
    ho, wo = y.shape[2], y.shape[3]
    k, p = c_ * kh * kw, ho * wo
    w2 = w.reshape((o_, k))
    step = rows_per_chunk(n_, k, p, budget)
    for j in numba.prange((n_ + step - 1) // step):
        n0 = j * step
        n1 = min(n_, n0 + step)
        m = (n1 - n0) * p
        cc = cols[n0 * k * p:n0 * k * p + k * m].reshape((c_, kh, kw, n1 - n0, ho, wo))
        g = gy[n0 * o_ * p:n0 * o_ * p + o_ * m].reshape((o_, m))
        _fwd_chunk(x[n0:n1], w2, cc, g, y[n0:n1], sh, sw, ph, pw, dh, dw)


@_jit
def _igrad_chunk(g, wt, gg, dd, dx, sh, sw, ph, pw, dh, dw):
    """``dx = col2im(W^T (K, O) @ G (O, n P))`` of one chunk of samples."""
    swap01(g, gg.reshape((g.shape[1], g.shape[0], g.shape[2], g.shape[3])))
    gemm.dot(wt, gg.reshape((g.shape[1], -1)), dd.reshape((wt.shape[0], -1)))
    col2im(dd, dx, sh, sw, ph, pw, dh, dw)


@_pjit
def conv2d_igrad(g, w, gm, dcols, dx, sh, sw, ph, pw, dh, dw, budget):
    """``dx = col2im(W^T G)`` chunk by chunk (dealt to the threads): ``G`` of the chunk as ``(O, n P)``, one
    GEMM into the chunk's slice of ``dcols``, then its scatter-add into the chunk's samples of ``dx``."""
    n_, o_, ho, wo = g.shape
    _, c_, kh, kw = w.shape
    k, p = c_ * kh * kw, ho * wo
    wt = w.reshape((o_, k)).T
    step = rows_per_chunk(n_, k, p, budget)
    for j in numba.prange((n_ + step - 1) // step):
        n0 = j * step
        n1 = min(n_, n0 + step)
        m = (n1 - n0) * p
        dd = dcols[n0 * k * p:n0 * k * p + k * m].reshape((c_, kh, kw, n1 - n0, ho, wo))
        _igrad_chunk(g[n0:n1], wt, gm[n0 * o_ * p:n0 * o_ * p + o_ * m], dd, dx[n0:n1], sh, sw, ph, pw, dh, dw)


@_jit
def _wgrad_chunk(g, x, cc, fill, gg, acc, t2, sh, sw, ph, pw, dh, dw):
    """``acc += G (O, n P) @ cols^T`` of one chunk (its columns computed first with ``fill``)."""
    if fill:
        im2col(x, cc, sh, sw, ph, pw, dh, dw)
    swap01(g, gg.reshape((g.shape[1], g.shape[0], g.shape[2], g.shape[3])))
    k = cc.shape[0] * cc.shape[1] * cc.shape[2]
    if k <= WGRAD_GEMM_K:
        gemm.dot(gg.reshape((g.shape[1], -1)), cc.reshape((k, -1)).T, t2)
    else:
        np.dot(gg.reshape((g.shape[1], -1)), cc.reshape((k, -1)).T, t2)
    acc += t2


@_pjit
def conv2d_wgrad(g, x, cols, fill, gm, tmp, dw_out, sh, sw, ph, pw, dh, dw, budget):
    """``dW = sum over chunks of G_chunk (O, n P) @ cols_chunk^T``, the columns laid out as :func:`conv2d_fwd`
    leaves them (``fill``: compute them here first, when no forward convolution of the same ``x`` did). Each
    of the :data:`WGRAD_PARTS` parts of the chunks sums into its own slice of ``tmp`` (a sum and a product per
    part); the parts' sums are added in part order."""
    n_, o_, ho, wo = g.shape
    _, c_, kh, kw = dw_out.shape
    k, p = c_ * kh * kw, ho * wo
    step = rows_per_chunk(n_, k, p, budget)
    chunks = (n_ + step - 1) // step
    parts = min(chunks, WGRAD_PARTS)
    for part in numba.prange(parts):
        acc = tmp[part * o_ * k:(part + 1) * o_ * k].reshape((o_, k))
        t2 = tmp[(WGRAD_PARTS + part) * o_ * k:(WGRAD_PARTS + part + 1) * o_ * k].reshape((o_, k))
        acc[...] = 0.0
        for j in range(part, chunks, parts):
            n0 = j * step
            n1 = min(n_, n0 + step)
            m = (n1 - n0) * p
            cc = cols[n0 * k * p:n0 * k * p + k * m].reshape((c_, kh, kw, n1 - n0, ho, wo))
            _wgrad_chunk(g[n0:n1], x[n0:n1], cc, fill, gm[n0 * o_ * p:n0 * o_ * p + o_ * m], acc, t2,
                         sh, sw, ph, pw, dh, dw)
    d2 = dw_out.reshape((o_, k))
    d2[...] = tmp[:o_ * k].reshape((o_, k))
    for part in range(1, parts):
        d2 += tmp[part * o_ * k:(part + 1) * o_ * k].reshape((o_, k))


tolerate_corrupt_entries(sys.modules[__name__])   # an unreadable Numba cache entry is a miss
