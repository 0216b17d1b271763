"""Convolution over in-range taps only, region by region: the path of :mod:`kernels_conv` for maps whose zero
padding is a large share of their taps (small maps, wide dilations).

The outputs split into *regions*: a run of rows (a band) whose in-range taps are the same range ``A``, times a
run of columns whose in-range taps are the same ``B`` (a 3x3 kernel with padding 1 has three bands each way: the
first row lacks tap 0, the last tap 2; nine regions). For region ``R`` of a chunk of ``n`` samples,
``K_R = C |A| |B|`` and ``M_R = n |U| |V|``::

    cols_R[(c, a, b), (n, u, v)] = x[n, c, s u + d a - p, s v + d b - p]      (every position in range)
    conv2d:        Y_R (O, M_R) = W_R (O, K_R) @ cols_R,    y[n, o, u, v] = Y_R[o, (n, u, v)]
    weight grad:   W̄[:, :, A, B] += G_R (O, M_R) @ cols_R^T

so no product multiplies the zero padding and no column is zero-filled. A chunk's columns are its regions' in
order, ``Q`` floats a sample (:func:`per_sample`).
"""
from __future__ import annotations

import sys

import numpy as np

from rnnc.backends.cache import tolerate_corrupt_entries
from rnnc.backends.cpu import gemm
from rnnc.backends.cpu.conv_columns import WGRAD_GEMM_K, copy_run
from rnnc.backends.cpu.njit import jit

#: Largest share of a map's taps in range (in-range ``(c, a, b, u, v)`` over ``C kh kw Ho Wo``) for which the
#: regions pay. One core, batch 128, 3x3 taps with dilation 2 and padding 2 (forward + both gradients, ms,
#: full columns -> regions): 4x4 maps (0.44 in range, 64 -> 128 channels) 12.2 -> 6.9; 7x7 (0.66) 9.7 -> 10.0;
#: 14x14 (0.82) 12.3 -> 13.9 (docs/benchmarks.md, "In-range taps only").
REGION_MAX = 0.5


@jit
def bands(size, n, k, s, p, d):
    """Runs of outputs ``u`` in ``range(n)`` with the same in-range taps ``a`` (``0 <= s u + d a - p < size``,
    a range): rows ``(u0, u1, a0, a1)``, ``a0 == a1 == 0`` where no tap is in range."""
    out = np.zeros((max(n, 1), 4), np.int64)
    m = 0
    for u in range(n):
        a0, a1 = 0, k
        while a0 < k and s * u + d * a0 - p < 0:
            a0 += 1
        while a1 > a0 and s * u + d * (a1 - 1) - p >= size:
            a1 -= 1
        if a1 == a0:
            a0 = a1 = 0
        if m > 0 and out[m - 1, 2] == a0 and out[m - 1, 3] == a1:
            out[m - 1, 1] = u + 1
        else:
            out[m, 0], out[m, 1], out[m, 2], out[m, 3] = u, u + 1, a0, a1
            m += 1
    return out[:m]


@jit
def _taps_times_outputs(bs):
    """``Σ |A| |U|`` over the bands ``bs``."""
    total = 0
    for i in range(bs.shape[0]):
        total += (bs[i, 3] - bs[i, 2]) * (bs[i, 1] - bs[i, 0])
    return total


@jit
def per_sample(c_, rows, cols):
    """In-range ``(c, a, b, u, v)`` of one sample: the floats of its columns, ``C (Σ |A||U|) (Σ |B||V|)``."""
    return c_ * _taps_times_outputs(rows) * _taps_times_outputs(cols)


@jit
def _by_region(w, tab, flat, to_flat):
    """Between a kernel ``w (O, C, kh, kw)`` and its regions' weights ``flat`` (``W_R[o, (c, a, b)]``, ``a ∈ A``,
    ``b ∈ B``, flat in region order, :func:`table`): ``to_flat``: ``flat = W_R``; else ``w[:, :, A, B] += W_R``
    for every region."""
    o_, c_ = w.shape[0], w.shape[1]
    q = 0
    for r in range(tab.shape[0]):
        a0, na, b0, nb = tab[r, 2], tab[r, 3], tab[r, 4], tab[r, 5]
        for o in range(o_):
            for c in range(c_):
                for a in range(a0, a0 + na):
                    for b in range(b0, b0 + nb):
                        if to_flat:
                            flat[q] = w[o, c, a, b]
                        else:
                            w[o, c, a, b] += flat[q]
                        q += 1


@jit
def region_weights(w, tab):
    """Every region's ``W_R (O, K_R)``, flat in region order (:func:`_by_region`)."""
    taps = 0
    for r in range(tab.shape[0]):
        taps += tab[r, 0]
    out = np.empty(w.shape[0] * w.shape[1] * taps, w.dtype)
    _by_region(w, tab, out, True)
    return out


#: Shortest row of a region's outputs moved as one run (a vectorised copy); shorter rows go element by element
#: through the offset tables (a run's set-up costs more than a few elements).
RUN_MIN = 8


@jit
def _gather(xf, plane, c_, n_, cr, src, nv, sw, na, nb, tap_h, tap_w):
    """``cols_R`` (``(K_R, M_R)`` flat at ``cr``) of one region from a chunk's flat maps ``xf`` (``n_``
    samples, ``c_`` planes of ``plane`` floats; the region's rows ``nv`` outputs long, input stride ``sw``):
    row ``(c, a, b)`` reads each output's first in-range position shifted by ``a tap_h + b tap_w``."""
    nuv = src.shape[0]
    m = n_ * nuv
    for c in range(c_):
        for a in range(na):
            for b in range(nb):
                q = ((c * na + a) * nb + b) * m
                shift = a * tap_h + b * tap_w
                for n in range(n_):
                    base = (n * c_ + c) * plane + shift
                    row = cr[q + n * nuv:q + (n + 1) * nuv]
                    if nv >= RUN_MIN and sw == 1:
                        for k in range(0, nuv, nv):
                            s0 = base + src[k]
                            copy_run(row[k:k + nv], xf[s0:s0 + nv], False)
                    elif nv >= RUN_MIN:
                        for k in range(0, nuv, nv):
                            s0 = base + src[k]
                            copy_run(row[k:k + nv], xf[s0:s0 + sw * (nv - 1) + 1:sw], False)
                    else:
                        for k in range(nuv):
                            row[k] = xf[base + src[k]]


@jit
def _outputs(mat, maps, o_, n_, plane, pos, nv, to_maps):
    """Between a region's ``(O, (n, k))`` matrix ``mat`` and a chunk's flat ``(n, O, plane)`` maps: ``to_maps``:
    ``maps[n, o, pos[k]] = mat[o, (n, k)]`` (a product's result to ``y``); else the reverse (``ḡ`` gathered
    for the weight gradient). Rows of ``nv`` outputs are moved as runs when long enough."""
    nuv = pos.shape[0]
    for o in range(o_):
        for n in range(n_):
            row = mat[o, n * nuv:(n + 1) * nuv]
            base = (n * o_ + o) * plane
            if nv >= RUN_MIN:
                for k in range(0, nuv, nv):
                    at = maps[base + pos[k]:base + pos[k] + nv]
                    if to_maps:
                        copy_run(at, row[k:k + nv], False)
                    else:
                        copy_run(row[k:k + nv], at, False)
            elif to_maps:
                for k in range(nuv):
                    maps[base + pos[k]] = row[k]
            else:
                for k in range(nuv):
                    row[k] = maps[base + pos[k]]


@jit
def worth(c_, h, wd, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """Whether the convolution of ``c_`` maps ``(h, wd) -> (ho, wo)`` by ``kh x kw`` taps takes the regions: at
    most :data:`REGION_MAX` of its taps in range. The renderer asks (the geometry is static), and picks the
    same kernels for a forward convolution and the weight gradient of the same maps."""
    rows, cols = bands(h, ho, kh, sh, ph, dh), bands(wd, wo, kw, sw, pw, dw)
    return per_sample(c_, rows, cols) <= REGION_MAX * c_ * kh * kw * ho * wo


@jit
def plan(w, h, wd, ho, wo, sh, sw, ph, pw, dh, dw):
    """The regions of the convolution of ``(h, wd)`` maps by ``w (O, C, kh, kw)`` into ``(ho, wo)``: their
    weights (:func:`region_weights`), their table (:func:`table`) and the floats of a sample's columns."""
    kh, kw = w.shape[2], w.shape[3]
    rows, cols = bands(h, ho, kh, sh, ph, dh), bands(wd, wo, kw, sw, pw, dw)
    tab, src, pos = table(rows, cols, wd, wo, sh, sw, ph, pw, dh, dw)
    return region_weights(w, tab), tab, src, pos, per_sample(w.shape[1], rows, cols)


@jit
def table(rows, cols, in_w, out_w, sh, sw, ph, pw, dh, dw):
    """Each region's taps and outputs, once per call: ``tab[r] = (|A| |B|, |U| |V|, a0, |A|, b0, |B|, |V|, k0)``
    for region ``r`` in order (row band major), and from ``k0`` on, for each of its outputs ``(u, v)`` in order,
    ``src`` the offset of its first in-range tap in an input plane ``in_w`` wide and ``pos`` its offset in an
    output plane ``out_w`` wide."""
    tab = np.empty((rows.shape[0] * cols.shape[0], 8), np.int64)
    total = (rows[-1, 1] - rows[0, 0]) * (cols[-1, 1] - cols[0, 0])
    src, pos = np.empty(total, np.int64), np.empty(total, np.int64)
    r = k = 0
    for i in range(rows.shape[0]):
        for j in range(cols.shape[0]):
            u0, u1, a0, a1 = rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3]
            v0, v1, b0, b1 = cols[j, 0], cols[j, 1], cols[j, 2], cols[j, 3]
            row = tab[r]
            row[0], row[1], row[2], row[3] = (a1 - a0) * (b1 - b0), (u1 - u0) * (v1 - v0), a0, a1 - a0
            row[4], row[5], row[6], row[7] = b0, b1 - b0, v1 - v0, k
            for u in range(u0, u1):
                for v in range(v0, v1):
                    src[k] = (sh * u + dh * a0 - ph) * in_w + sw * v + dw * b0 - pw
                    pos[k] = u * out_w + v
                    k += 1
            r += 1
    return tab, src, pos


@jit
def _columns(x, tab, r, src, pos, cc, off, fill, sw, dh, dw):
    """Region ``r`` of a chunk of maps ``x``: ``K_R``, ``M_R``, its columns ``cols_R`` (flat in ``cc`` from
    ``off``; gathered from ``x`` first with ``fill``), its outputs' positions and the length of its rows."""
    n_, c_, h, w = x.shape
    taps, nuv, na, nb, nv, k0 = tab[r, 0], tab[r, 1], tab[r, 3], tab[r, 5], tab[r, 6], tab[r, 7]
    kr, m = c_ * taps, n_ * nuv
    cr = cc[off:off + kr * m]
    if fill and kr > 0:
        _gather(x.reshape(-1), h * w, c_, n_, cr, src[k0:k0 + nuv], nv, sw, na, nb, dh * w, dw)
    return kr, m, cr, pos[k0:k0 + nuv], nv


@jit
def fwd_chunk(x, wr, tab, src, pos, cc, gy, y, sw, dh, dw):
    """``y = conv2d(x, w)`` of one chunk of samples, region by region (:func:`table`): columns into ``cc``,
    ``Y_R = W_R @ cols_R`` into ``gy``, scattered to ``y`` (zeros where no tap is in range)."""
    o_, plane, yf = y.shape[1], y.shape[2] * y.shape[3], y.reshape(-1)
    off = woff = 0
    for r in range(tab.shape[0]):
        kr, m, cr, pr, nv = _columns(x, tab, r, src, pos, cc, off, True, sw, dh, dw)
        yr = gy[:o_ * m].reshape((o_, m))
        if kr == 0:
            yr[:, :] = 0.0
        else:
            gemm.dot(wr[woff:woff + o_ * kr].reshape((o_, kr)), cr.reshape((kr, m)), yr)
        _outputs(yr, yf, o_, x.shape[0], plane, pr, nv, True)
        off += kr * m
        woff += o_ * kr


@jit
def wgrad_chunk(g, x, tab, src, pos, cc, fill, gm, acc, t2, sw, dh, dw):
    """``acc_R += G_R @ cols_R^T`` of one chunk for every region (``acc`` flat in region order, as
    :func:`region_weights`), the columns gathered first with ``fill``."""
    o_, plane, gf = g.shape[1], g.shape[2] * g.shape[3], g.reshape(-1)
    off = woff = 0
    for r in range(tab.shape[0]):
        kr, m, cr, pr, nv = _columns(x, tab, r, src, pos, cc, off, fill, sw, dh, dw)
        if kr > 0:
            gr, tr = gm[:o_ * m].reshape((o_, m)), t2[:o_ * kr].reshape((o_, kr))
            _outputs(gr, gf, o_, x.shape[0], plane, pr, nv, False)
            if kr <= WGRAD_GEMM_K:
                gemm.dot(gr, cr.reshape((kr, m)).T, tr)
            else:
                np.dot(gr, cr.reshape((kr, m)).T, tr)
            a, tf = acc[woff:woff + o_ * kr], t2[:o_ * kr]
            for e in range(o_ * kr):
                a[e] += tf[e]
        off += kr * m
        woff += o_ * kr


@jit
def add_regions(acc, tab, dw_out):
    """``dw_out[o, c, A, B] += acc_R`` for every region (``acc`` flat in region order, :func:`table`)."""
    _by_region(dw_out, tab, acc, False)


tolerate_corrupt_entries(sys.modules[__name__])   # an unreadable Numba cache entry is a miss
