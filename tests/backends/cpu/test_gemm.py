"""The paneled BLAS product ``rnnc.backends.cpu.gemm.dot`` against numpy, on every layout it accepts."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnc.backends.cpu import gemm

LAYOUTS = ("c", "f", "strided", "offset", "reversed")


def _view(x, layout):
    """``x``'s values in a view of the named layout (rows or columns of unit stride, or neither)."""
    if layout == "f":
        return np.asfortranarray(x)
    if layout == "strided":                       # columns two apart: neither unit-stride rows nor columns
        wide = np.zeros((x.shape[0], 2 * x.shape[1]), x.dtype)
        wide[:, ::2] = x
        return wide[:, ::2]
    if layout == "offset":                        # unit-stride rows inside a wider array (leading dim > cols)
        wide = np.zeros((x.shape[0], x.shape[1] + 3), x.dtype)
        wide[:, 1:-2] = x
        return wide[:, 1:-2]
    if layout == "reversed":                      # negative row stride (copied for BLAS)
        return np.ascontiguousarray(x[::-1])[::-1]
    return np.ascontiguousarray(x)


def _check(m, k, n, dtype, la, lb, lo, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = _view(np.full((m, n), np.nan, dtype), lo)
    gemm.dot(_view(a, la), _view(b, lb), out)
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * max(k, 1) ** 0.5 * 4)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 80), k=st.integers(0, 300), n=st.integers(0, 300),
       dtype=st.sampled_from([np.float32, np.float64]), la=st.sampled_from(LAYOUTS),
       lb=st.sampled_from(LAYOUTS), lo=st.sampled_from(LAYOUTS))
def test_dot_equals_numpy(m, k, n, dtype, la, lb, lo):
    _check(m, k, n, dtype, la, lb, lo)


@pytest.mark.parametrize("shape", [(16, 128, 512), (16, 512, 128), (33, 257, 1031), (64, 1024, 256),
                                   (130, 700, 90), (1, 3000, 1), (200, 64, 2000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_in_panels_equals_numpy(shape, dtype):
    """Shapes cut into row, column and inner panels (ragged last panels included)."""
    m, k, n = shape
    assert m * k * n <= gemm.LIMIT or gemm.panels(m, k, n) != shape or k > 8 * 128
    for la in ("c", "f"):
        _check(m, k, n, dtype, la, "c", "c")
    _check(m, k, n, dtype, "c", "f", "offset")


def test_panels_respect_the_limits():
    for m in (1, 8, 16, 32, 64, 65, 200, 1600):
        for k in (1, 64, 128, 512, 1024, 3200):
            for n in (1, 64, 128, 512, 2048):
                wm, wk, wn = gemm.panels(m, k, n)
                assert 1 <= wm <= m and 1 <= wk <= k and 1 <= wn <= n
                if (wm, wk, wn) != (m, k, n):
                    assert wm * wk * wn <= gemm.LIMIT and wm <= gemm.ROWS
                    assert -(-k // wk) <= gemm.MAX_INNER_PANELS
                else:
                    assert m * k * n <= gemm.LIMIT or k > gemm.MAX_INNER_PANELS * 16


def test_transposed_operands_need_no_copy():
    """``A.T`` views (a weight gradient's ``g^T x``) are passed to BLAS as transposed, not copied."""
    assert gemm._layout(np.zeros((5, 7), np.float32).T) == (gemm._TRANS, 7)
    assert gemm._layout(np.zeros((5, 7), np.float32)) == (gemm._NOTRANS, 7)
    assert gemm._layout(np.zeros((5, 14), np.float32)[:, ::2]) == (0, 0)
    assert gemm._layout(np.zeros((1, 1), np.float32)[:, ::2]) == (gemm._NOTRANS, 1)


def test_mixed_or_integer_dtypes_are_refused_at_compile_time():
    """BLAS would read the wrong element size: refused when Numba types the call, never run."""
    from numba.core.errors import TypingError

    a32, a64 = np.ones((3, 4), np.float32), np.ones((3, 4), np.float64)
    b64, out64 = np.ones((4, 2), np.float64), np.zeros((3, 2), np.float64)
    with pytest.raises(TypingError, match="one dtype"):
        gemm.dot(a32, b64, out64)
    with pytest.raises(TypingError, match="float32 or float64"):
        gemm.dot(np.ones((3, 4), np.int64), np.ones((4, 2), np.int64), np.zeros((3, 2), np.int64))
    gemm.dot(a64, b64, out64)
    assert (out64 == 4).all()


def test_only_2d_arrays_are_accepted():
    from numba.core.errors import TypingError

    with pytest.raises(TypingError, match="2-D arrays"):
        gemm.dot(np.ones(4), np.ones((4, 2)), np.zeros(2))


def test_stages_call_one_external_function():
    """Compiled callers hold a call of the registered C function, not a copy of the paneling code."""
    import numba

    @numba.njit
    def caller(a, b, out):
        gemm.dot(a[1:], b, out[1:])
        return 0

    a, b, out = np.ones((5, 3)), np.ones((3, 2)), np.zeros((5, 2))
    caller(a, b, out)
    assert (out[1:] == 3).all() and (out[0] == 0).all()
    ir = caller.inspect_llvm(caller.signatures[0])
    assert gemm.VERSION in ir and "numba_xxgemm" not in ir


@pytest.mark.parametrize("lo", LAYOUTS)
@pytest.mark.parametrize("shape", [(7, 5, 3), (70, 900, 130), (3, 0, 4)])
def test_dot_add_accumulates(shape, lo):
    """``dot_add``: ``out += a @ b`` on every output layout, paneled shapes and an empty inner dimension."""
    m, k, n = shape
    rng = np.random.default_rng(1)
    a, b, start = rng.standard_normal((m, k)), rng.standard_normal((k, n)), rng.standard_normal((m, n))
    out = _view(start.copy(), lo)
    gemm.dot_add(a, b, out)
    np.testing.assert_allclose(out, start + a @ b, rtol=1e-12, atol=1e-12 * max(k, 1))
