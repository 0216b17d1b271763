"""Matrix products as BLAS calls on panels sized for the BLAS's small-matrix kernels (``gk.dot`` in generated
code).

:math:`C = A B` with ``A`` (m, k), ``B`` (k, n): when :math:`m k n` exceeds ``LIMIT`` the product is cut into
panels of ``wm`` rows, ``wn`` columns of ``C`` and ``wk`` of the inner dimension,

.. math:: C_{I,J} = \\sum_Q A_{I,Q} B_{Q,J},

each panel one ``?gemm`` call on strided views (no copies; ``beta = 1`` adds the later inner panels).

Why: OpenBLAS (scipy's, which Numba's ``np.dot`` calls) runs products with :math:`m k n \\le 10^6` on its
small-matrix kernels, which need no packing, and bigger ones on the packing path, which only pays for big
row counts. On one core of the development machine (float32, ``benchmarks/gemm_panels.py``) a scan step's
(16 x 128) @ (128 x 512) ran at 55 GFLOP/s as one call and 114 in panels; (32 x 256) @ (256 x 1024) at 70
against 110; (64 x 512) @ (512 x 2048) at 83 against 99; products already under the limit at the same speed
(a call's overhead aside).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.linalg import check_blas_return, ensure_blas, intp_t, ll_char, ll_void_p

#: most multiply-adds (m * n * k) in one panel: half of OpenBLAS's small-kernel bound (10**6), measured best
LIMIT = 2 ** 19
#: most rows in one panel: more rows go to the packing path again
ROWS = 64
#: most panels along the inner dimension: each adds its panel of ``C`` again (``beta = 1``); a (1024 x 3200)
#: @ (3200 x 128) weight gradient ran 1.4x slower in 25 panels than in one call, a (512 x 800) @ (800 x 64)
#: one 1.37x faster in 7
MAX_INNER_PANELS = 8

_NOTRANS, _TRANS = ord("n"), ord("t")
#: named in every generated module, so that a change here changes the module's cache key: Numba's cache of a
#: generated stage holds a copy of this code and checks only the stage's own file
VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
_jit = numba.njit(cache=True, nogil=True)


@intrinsic
def _xxgemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Fortran ``?gemm`` through Numba's own BLAS entry (``numba_xxgemm``, scipy's ``cython_blas``)."""
    dtype = c.dtype
    if dtype not in (types.float32, types.float64) or a.dtype != dtype or b.dtype != dtype:
        raise TypingError(f"gemm needs float32 or float64 arrays of one dtype, got {a.dtype}, {b.dtype}, {dtype}")
    sig = types.int32(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        ensure_blas()
        fnty = ir.FunctionType(ir.IntType(32), [ll_char, ll_char, ll_char, intp_t, intp_t, intp_t, ll_void_p,
                                                ll_void_p, intp_t, ll_void_p, intp_t, ll_void_p, ll_void_p, intp_t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")

        def integer(i):
            return context.cast(builder, args[i], sig.args[i], types.intp)

        def char(i):
            return builder.trunc(integer(i), ll_char)

        def data(i):
            return builder.bitcast(context.make_array(sig.args[i])(context, builder, args[i]).data, ll_void_p)

        def scalar(i):
            slot = cgutils.alloca_once(builder, context.get_data_type(dtype))
            builder.store(context.cast(builder, args[i], sig.args[i], dtype), slot)
            return builder.bitcast(slot, ll_void_p)

        kind = ir.Constant(ll_char, ord("s" if dtype == types.float32 else "d"))
        res = builder.call(fn, (kind, char(0), char(1), integer(2), integer(3), integer(4), scalar(5), data(6),
                                integer(7), data(8), integer(9), scalar(10), data(11), integer(12)))
        check_blas_return(context, builder, res)
        return context.get_constant(types.int32, 0)

    return sig, codegen


@_jit
def _layout(x):
    """(BLAS transpose flag, leading dimension) of a row-major matrix view ``x``, or (0, 0) when neither its
    rows nor its columns have unit stride."""
    s = x.itemsize
    rows, cols = x.shape
    # the stride of a dimension of size 1 never matters (numpy calls such views contiguous)
    row = x.strides[0] if rows > 1 else cols * s
    col = x.strides[1] if cols > 1 else s
    if col == s and row % s == 0 and row >= cols * s:
        return _NOTRANS, max(row // s, 1)
    row = x.strides[0] if rows > 1 else s
    col = x.strides[1] if cols > 1 else rows * s
    if row == s and col % s == 0 and col >= rows * s:
        return _TRANS, max(col // s, 1)
    return 0, 0


@_jit
def _gemm(a, b, c, beta):
    """``c = a @ b + beta * c`` in one BLAS call; ``c``'s rows have unit stride, ``a`` and ``b`` are strided
    either way (checked by the caller)."""
    ta, lda = _layout(a)
    tb, ldb = _layout(b)
    _, ldc = _layout(c)
    m, k = a.shape
    # column-major view: C^T (n x m) = B^T (n x k) @ A^T (k x m); a row-major matrix is its transpose there
    _xxgemm(tb, ta, b.shape[1], m, k, 1.0, b, ldb, a, lda, beta, c, ldc)


def panels(m: int, k: int, n: int) -> tuple:
    """Panel sizes (wm, wk, wn) for ``(m, k) @ (k, n)``: whole when ``m k n <= LIMIT``; else rows in blocks
    of ``ROWS``, columns cut to multiples of 16 (at least 64) and, when that is not enough, the inner
    dimension too."""
    wm = min(m, ROWS)
    if m * k * n <= LIMIT:
        return m, k, n
    wn = min(n, max(64, LIMIT // max(wm * k, 1) // 16 * 16))
    wk = k if wm * k * wn <= LIMIT else max(16, LIMIT // (wm * wn) // 16 * 16)
    if k > MAX_INNER_PANELS * wk:    # a long sum (a weight gradient over many rows): one packed call is faster
        return m, k, n
    return wm, wk, wn


_panels = _jit(panels)


@_jit
def _dot_panels(a, b, out):
    m, k = a.shape
    n = b.shape[1]
    wm, wk, wn = _panels(m, k, n)
    if wm == m and wk == k and wn == n:
        _gemm(a, b, out, 0.0)
        return
    for i in range(0, m, wm):
        for j in range(0, n, wn):
            for q in range(0, k, wk):
                _gemm(a[i:i + wm, q:q + wk], b[q:q + wk, j:j + wn], out[i:i + wm, j:j + wn], 0.0 if q == 0 else 1.0)


@_jit
def _dot_out(a, b, out):
    if _layout(out)[0] != _NOTRANS:
        tmp = np.empty(out.shape, out.dtype)
        _dot_panels(a, b, tmp)
        out[...] = tmp
    else:
        _dot_panels(a, b, out)


@_jit
def _dot_strided(a, b, out):
    if _layout(b)[0] == 0:
        _dot_out(a, np.ascontiguousarray(b), out)
    else:
        _dot_out(a, b, out)


@_jit
def dot(a, b, out):
    """:math:`Y = A B` into ``out`` (``(m, k) @ (k, n)``), in panels (module docstring). Any strided 2-D
    views: an operand is copied only when neither its rows nor its columns have unit stride, and ``out``
    is written through a temporary only when its rows do not."""
    m, k = a.shape
    if m == 0 or b.shape[1] == 0:
        return 0
    if k == 0:
        out[...] = 0
    elif _layout(a)[0] == 0:
        _dot_strided(np.ascontiguousarray(a), b, out)
    else:
        _dot_strided(a, b, out)
    return 0
