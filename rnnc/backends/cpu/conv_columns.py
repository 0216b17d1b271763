"""Convolution on full im2col columns (zero padding included): the path of :mod:`kernels_conv` for maps whose
taps are mostly in range, and for the input gradient of every strided convolution.

``cols`` of a chunk of ``n`` samples are ``(C, kh, kw, n, Ho, Wo)``, ``K = C kh kw`` rows of ``n P`` columns::

    cols[c, a, b, n, u, v] = x[n, c, s u + d a - p, s v + d b - p]   (0 out of range)
    conv2d:        Y (O, n P) = W (O, K) @ cols,          y = swap01(Y)
    input grad:    D (K, n P) = W^T (K, O) @ G (O, n P),  x̄ = col2im(D)
    weight grad:   W̄ (O, K) += G (O, n P) @ cols^T
"""
from __future__ import annotations

import sys

import numpy as np

from rnnc.backends.cache import tolerate_corrupt_entries
from rnnc.backends.cpu import gemm
from rnnc.backends.cpu.njit import jit

#: Largest ``K`` whose weight-gradient product runs as ``gemm.dot`` panels (beyond it, ``np.dot``): the weight
#: gradient's (O, M) @ (M, K) was level or slower in panels except with a short K (the first layer's K = 9:
#: 71 -> 23 us). The forward and input-gradient products always take them (1.2-3x faster than ``np.dot`` at the
#: flagship's chunk shapes).
WGRAD_GEMM_K = 32


# Copies run through 1-D views indexed from 0 (``dst = a[i:j]; dst[v] = src[v]``): LLVM then vectorises them,
# while ``a[i + d]`` with a run-time offset keeps Numba's negative-index check in the loop (20x slower, measured).
@jit
def _span(off, s, size, n):
    """Outputs ``u`` in ``range(lo, hi)`` with ``0 <= s u + off < size``."""
    lo = max(0, (-off + s - 1) // s)
    hi = min(n, (size - 1 - off) // s + 1)
    return lo, hi


@jit
def copy_run(dst, src, add):
    """``dst = src`` (or ``dst += src`` with ``add``) over two equal-length 1-D views."""
    if add:
        for i in range(dst.shape[0]):
            dst[i] += src[i]
    else:
        for i in range(dst.shape[0]):
            dst[i] = src[i]


@jit
def _clear_edges(cf, dst0, u0, u1, v0, v1, wo):
    """Zero the columns outside ``[v0, v1)`` of rows ``u0..u1`` of one ``(Ho, Wo)`` plane at ``dst0``."""
    for u in range(u0, u1):
        r = dst0 + u * wo
        for v in range(v0):
            cf[r + v] = 0.0
        for v in range(v1, wo):
            cf[r + v] = 0.0


@jit
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
                            copy_run(cf[dst0 + lo:dst0 + hi], xf[src0 + lo:src0 + hi], False)
                            _clear_edges(cf, dst0, u0, u1, v0, v1, wo)
                        else:
                            _clear_edges(cf, dst0, u0, u1, v0, v1, wo)
                            copy_run(xf[src0 + lo:src0 + hi], cf[dst0 + lo:dst0 + hi], True)
                        continue
                    for u in range(u0, u1):
                        r, q = dst0 + u * wo, src0 + sh * u * w
                        cv, xv = cf[r + v0:r + v1], xf[q + sw * v0:q + sw * (v1 - 1) + 1:sw]
                        if gather:
                            copy_run(cv, xv, False)
                        else:
                            copy_run(xv, cv, True)


@jit
def im2col(x, cols, sh, sw, ph, pw, dh, dw):
    """``cols[c, a, b, n, u, v] = x[n, c, s u + d a - p, s v + d b - p]`` (in-range positions only; the rest
    of ``cols`` is left as the runtime keeps it, zero)."""
    _window_runs(x, cols, sh, sw, ph, pw, dh, dw, True)


@jit
def col2im(cols, dx, sh, sw, ph, pw, dh, dw):
    """``dx = 0``, then ``dx[n, c, s u + d a - p, s v + d b - p] += cols[c, a, b, n, u, v]`` (``cols`` is
    scratch: its out-of-range columns are zeroed on the way)."""
    dx[...] = 0.0
    _window_runs(dx, cols, sh, sw, ph, pw, dh, dw, False)


@jit
def swap01(src, dst):
    """``dst[j, i] = src[i, j]`` over the first two dims of 4-D arrays."""
    n0, n1, h, w = src.shape
    for i in range(n0):
        for j in range(n1):
            for u in range(h):
                for v in range(w):
                    dst[j, i, u, v] = src[i, j, u, v]


@jit
def fwd_chunk(x, w2, cc, g, y, sh, sw, ph, pw, dh, dw):
    """``y = swap01(W (O, K) @ im2col(x))`` of one chunk of samples."""
    n = x.shape[0]
    im2col(x, cc, sh, sw, ph, pw, dh, dw)
    gemm.dot(w2, cc.reshape((cc.shape[0] * cc.shape[1] * cc.shape[2], -1)), g)
    swap01(g.reshape((g.shape[0], n, y.shape[2], y.shape[3])), y)


@jit
def igrad_chunk(g, wt, gg, dd, dx, sh, sw, ph, pw, dh, dw):
    """``dx = col2im(W^T (K, O) @ G (O, n P))`` of one chunk of samples (any stride)."""
    swap01(g, gg.reshape((g.shape[1], g.shape[0], g.shape[2], g.shape[3])))
    gemm.dot(wt, gg.reshape((g.shape[1], -1)), dd.reshape((wt.shape[0], -1)))
    col2im(dd, dx, sh, sw, ph, pw, dh, dw)


@jit
def wgrad_chunk(g, x, cc, fill, gg, acc, t2, sh, sw, ph, pw, dh, dw):
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


tolerate_corrupt_entries(sys.modules[__name__])   # an unreadable Numba cache entry is a miss
