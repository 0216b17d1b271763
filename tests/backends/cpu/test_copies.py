"""The prologue's transposed copies (rnnc/backends/cpu/copies.py): OpenBLAS's ?omatcopy, exact, or numpy's copy."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnc.backends.cpu import copies


def test_the_blas_transpose_is_found_for_both_dtypes():
    # scipy's OpenBLAS (the one Numba's products call) exports cblas_?omatcopy; without it every copy is numpy's
    assert set(copies._routines()) == {np.dtype(np.float32), np.dtype(np.float64)}


@settings(max_examples=40, deadline=None)
@given(r=st.integers(1, 300), c=st.integers(1, 300), pad=st.integers(0, 9), lead=st.integers(0, 5),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 31 - 1))
def test_transpose_into_is_exact_and_writes_only_its_columns(r, c, pad, lead, dtype, seed):
    rng = np.random.default_rng(seed)
    wide = rng.standard_normal((r + 2, c + pad + 3)).astype(dtype)
    src = wide[1:r + 1, :c]                        # rows contiguous, a leading dimension beyond c
    big = np.full((c, r + lead + pad), np.nan, dtype)
    dst = big[:, lead:lead + r]
    copies.transpose_into(src, dst)
    assert np.array_equal(dst, src.T)
    assert np.isnan(big[:, :lead]).all() and np.isnan(big[:, lead + r:]).all()


def test_large_copies_take_the_blas_routine_and_others_numpy(monkeypatch):
    calls = []
    real = copies._routines()[np.dtype(np.float32)]
    monkeypatch.setattr(copies, "_ROUTINES", {np.dtype(np.float32): lambda *a: (calls.append(a[2:4]), real(*a))})
    w = np.arange(256 * 128, dtype=np.float32).reshape(256, 128)
    out = np.empty((128, 256), np.float32)
    copies.transpose_into(w, out)
    assert calls == [(256, 128)] and np.array_equal(out, w.T)
    copies.transpose_into(w[:8, :8], np.empty((8, 8), np.float32))          # under MIN_ELEMENTS: numpy
    copies.transpose_into(w[:, ::2], np.empty((64, 256), np.float32))      # strided rows: numpy
    copies.transpose_into(w.astype(np.float64), np.empty((128, 256)))      # no float64 routine here: numpy
    assert calls == [(256, 128)]


def test_without_the_routine_numpy_copies_the_same(monkeypatch):
    monkeypatch.setattr(copies, "_ROUTINES", {})
    w = np.random.default_rng(1).standard_normal((300, 200))
    out = np.empty((200, 300))
    copies.transpose_into(w, out)
    assert np.array_equal(out, w.T)


def test_a_routine_that_copies_wrong_is_refused():
    def wrong(order, trans, r, c, alpha, src, lds, dst, ldd):       # copies without transposing
        n = r * c
        a = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_double * n).from_address(src))
        b = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_double * n).from_address(dst))
        b[:] = a
    assert not copies._works(wrong, np.float64)
    assert copies._works(copies._routines()[np.dtype(np.float64)], np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concat_last_stacks_transposed_and_plain_parts(dtype):
    rng = np.random.default_rng(2)
    a, b, c = (rng.standard_normal(s).astype(dtype) for s in [(160, 130), (130, 40), (150, 130)])
    out = np.empty((130, 160 + 40 + 150), dtype)
    copies.concat_last((a.T, b, c.T), out)
    assert np.array_equal(out, np.concatenate((a.T, b, c.T), axis=-1))
