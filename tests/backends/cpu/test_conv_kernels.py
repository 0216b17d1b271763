"""The convolution kernels (rnnc/backends/cpu/kernels_conv.py) against a brute-force loop over every output and
tap, on both paths for every geometry: full im2col columns (``conv2d_fwd`` ...), and the products over in-range
taps region by region (``conv2d_fwd_regions`` ..., conv_regions.py; the input gradient of a stride-1
convolution as the forward convolution of the flipped kernel). Hypothesis draws the geometry (sizes, kernel,
stride, padding, dilation), the chunk budget and the channel counts; float64 to 1e-12. Which path the renderer
picks is checked on the flagship's layers.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from image_cases import igrad_regions

from rnnc.backends.cpu import conv_regions as reg
from rnnc.backends.cpu import kernels_conv
from rnnc.backends.cpu import kernels_image as imk


def _brute(x, w, g, geo):
    """``y``, ``dx`` and ``dw`` of ``conv2d(x, w)`` for the output gradient ``g``, one tap at a time."""
    sh, sw, ph, pw, dh, dw = geo
    _, _, h, wd = x.shape
    _, _, kh, kw = w.shape
    ho, wo = g.shape[2], g.shape[3]
    y, dx, dwt = np.zeros(g.shape), np.zeros(x.shape), np.zeros(w.shape)
    for a, b, u, v in itertools.product(range(kh), range(kw), range(ho), range(wo)):
        yy, xx = sh * u + dh * a - ph, sw * v + dw * b - pw
        if 0 <= yy < h and 0 <= xx < wd:
            y[:, :, u, v] += x[:, :, yy, xx] @ w[:, :, a, b].T
            dx[:, :, yy, xx] += g[:, :, u, v] @ w[:, :, a, b]
            dwt[:, :, a, b] += g[:, :, u, v].T @ x[:, :, yy, xx]
    return y, dx, dwt


def _out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _check(n, c, o, h, wd, kh, kw, geo, budget, seed=0):
    """Both paths against :func:`_brute`; every output written (zeros where no tap is in range), the weight
    gradient on the forward's columns and on its own (laid out alike)."""
    sh, sw, ph, pw, dh, dw = geo
    ho, wo = _out(h, kh, sh, ph, dh), _out(wd, kw, sw, pw, dw)
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, c, h, wd)), rng.standard_normal((o, c, kh, kw))
    g = rng.standard_normal((n, o, ho, wo))
    want_y, want_dx, want_dw = _brute(x, w, g, geo)
    size = n * c * kh * kw * ho * wo
    for tag in ("", "_regions"):
        cols, gm = np.zeros(size), np.zeros(n * o * ho * wo)
        y = np.full(want_y.shape, 9.0)
        getattr(imk, "conv2d_fwd" + tag)(x, w, cols, gm, y, *geo, budget)
        np.testing.assert_allclose(y, want_y, rtol=0, atol=1e-12, err_msg=tag)
        # full columns leave the zero padding as the runtime keeps it, zero; the regions write every float they use
        for fill, cc in ((False, cols), (True, np.full(size, 7.0) if tag else np.zeros(size))):
            dwt = np.full(w.shape, 5.0)
            getattr(imk, "conv2d_wgrad" + tag)(g, x, cc, fill, gm, dwt, *geo, budget)
            np.testing.assert_allclose(dwt, want_dw, rtol=0, atol=1e-12, err_msg=tag)
            if fill:
                used = n * reg.plan(w, h, wd, ho, wo, *geo)[-1] if tag else size
                np.testing.assert_array_equal(cc[:used], cols[:used])
    dx = np.full(x.shape, 3.0)
    imk.conv2d_igrad(g, w, gm, np.zeros(size), dx, *geo, budget)
    np.testing.assert_allclose(dx, want_dx, rtol=0, atol=1e-12)
    if (sh, sw) == (1, 1):
        dx = np.full(x.shape, 3.0)
        igrad_regions(g, w, dx, ph, pw, dh, dw, budget)
        np.testing.assert_allclose(dx, want_dx, rtol=0, atol=1e-12, err_msg="regions")


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9),
       st.integers(1, 3), st.integers(1, 3), st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(0, 3),
                                                         st.integers(0, 3), st.integers(1, 2), st.integers(1, 2)),
       st.sampled_from([1, 40, 10 ** 6]))
def test_conv_kernels_match_brute_force(n, c, o, h, wd, kh, kw, geo, budget):
    """Forward, weight gradient and input gradient equal the brute-force sums over in-range taps on both paths,
    whatever the geometry and chunking."""
    sh, sw, ph, pw, dh, dw = geo
    assume(_out(h, kh, sh, ph, dh) >= 1 and _out(wd, kw, sw, pw, dw) >= 1)
    _check(n, c, o, h, wd, kh, kw, geo, budget)


def _regional(c, h, wd, kh, kw, geo):
    """The renderer's choice of the regions for this geometry."""
    sh, sw, ph, pw, dh, dw = geo
    return kernels_conv.regions(c, h, wd, _out(h, kh, sh, ph, dh), _out(wd, kw, sw, pw, dw), kh, kw, *geo)


@pytest.mark.parametrize("c, o, size, budget", [(4, 6, 4, 10 ** 6), (3, 5, 7, 200), (2, 3, 14, 50)])
def test_flagship_geometries(c, o, size, budget):
    """The flagship's 3x3 taps with dilation 2 and padding 2: the renderer picks the regions for the 4x4 map
    (0.44 of its taps in range) and the full columns for the 7x7 and 14x14 maps; the 1x1 convolution with
    padding 1 on a 1x1 map (the classifier head, 1 of its 9 outputs in range) takes them, its input gradient
    too (a forward convolution with padding -1, a crop)."""
    geo = (1, 1, 2, 2, 2, 2)
    assert _regional(c, size, size, 3, 3, geo) == (size == 4)
    _check(3, c, o, size, size, 3, 3, geo, budget)
    assert _regional(5, 1, 1, 1, 1, (1, 1, 1, 1, 1, 1))
    _check(3, 5, 4, 1, 1, 1, 1, (1, 1, 1, 1, 1, 1), budget)


def test_bands():
    """Runs of outputs with the same in-range taps: 3 taps, dilation 2, padding 2 over 4 rows (two bands of two
    taps each) and over 14 (the inner rows with all three); 1 tap with padding 1 over a 1-row map (no tap for
    the first and last outputs)."""
    np.testing.assert_array_equal(reg.bands(4, 4, 3, 1, 2, 2), [[0, 2, 1, 3], [2, 4, 0, 2]])
    np.testing.assert_array_equal(reg.bands(14, 14, 3, 1, 2, 2), [[0, 2, 1, 3], [2, 12, 0, 3], [12, 14, 0, 2]])
    np.testing.assert_array_equal(reg.bands(1, 3, 1, 1, 1, 1), [[0, 1, 0, 0], [1, 2, 0, 1], [2, 3, 0, 0]])
