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

Compiled callers (``dot``, ``dot_add``) hold only a call of one C-callable function for both dtypes, compiled
once and registered with LLVM by name (``VERSION``), which does the layout checks, copies and panels on pointers
and element strides.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.caching import FunctionCache
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.linalg import check_blas_return, ensure_blas, intp_t, ll_char, ll_void_p

from rnnc.backends.cache import tolerate_corrupt_entries

#: most multiply-adds (m * n * k) in one panel: half of OpenBLAS's small-kernel bound (10**6), measured best
LIMIT = 2 ** 19
#: most rows in one panel: more rows go to the packing path again
ROWS = 64
#: most panels along the inner dimension: each adds its panel of ``C`` again (``beta = 1``); a (1024 x 3200)
#: @ (3200 x 128) weight gradient ran 1.4x slower in 25 panels than in one call, a (512 x 800) @ (800 x 64)
#: one 1.37x faster in 7
MAX_INNER_PANELS = 8

_NOTRANS, _TRANS = ord("n"), ord("t")
_jit = numba.njit(cache=True, nogil=True)


@intrinsic
def _xxgemm(typingctx, single, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Fortran ``?gemm`` (``alpha = 1``) on byte pointers, through Numba's own BLAS entry (``numba_xxgemm``,
    scipy's ``cython_blas``): ``sgemm`` when ``single`` is nonzero, else ``dgemm`` (chosen when it runs, so one
    compiled function serves both dtypes)."""
    sig = types.int32(single, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc)

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
            return builder.bitcast(args[i], ll_void_p)

        def scalars(value):
            """``value`` (float64) in a float32 and a float64 slot: the pointer to the one ``?gemm`` reads."""
            f32 = cgutils.alloca_once(builder, context.get_data_type(types.float32))
            f64 = cgutils.alloca_once(builder, context.get_data_type(types.float64))
            builder.store(context.cast(builder, value, types.float64, types.float32), f32)
            builder.store(value, f64)
            return builder.select(is_single, builder.bitcast(f32, ll_void_p), builder.bitcast(f64, ll_void_p))

        is_single = builder.icmp_signed("!=", integer(0), context.get_constant(types.intp, 0))
        kind = builder.select(is_single, ir.Constant(ll_char, ord("s")), ir.Constant(ll_char, ord("d")))
        one = context.get_constant(types.float64, 1.0)
        beta = context.cast(builder, args[10], sig.args[10], types.float64)
        res = builder.call(fn, (kind, char(1), char(2), integer(3), integer(4), integer(5), scalars(one), data(6),
                                integer(7), data(8), integer(9), scalars(beta), data(11), integer(12)))
        check_blas_return(context, builder, res)
        return context.get_constant(types.int32, 0)

    return sig, codegen


@intrinsic
def _at(typingctx, ptr, offset):
    """``ptr + offset`` (elements, signed)."""
    def codegen(context, builder, sig, args):
        return builder.gep(args[0], [context.cast(builder, args[1], sig.args[1], types.intp)])

    return ptr(ptr, offset), codegen


@intrinsic
def _load(typingctx, ptr, offset):
    """``ptr[offset]``."""
    def codegen(context, builder, sig, args):
        return builder.load(builder.gep(args[0], [context.cast(builder, args[1], sig.args[1], types.intp)]))

    return ptr.dtype(ptr, offset), codegen


@intrinsic
def _store(typingctx, ptr, offset, value):
    """``ptr[offset] = value``."""
    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[2], sig.args[2], ptr.dtype)
        builder.store(val, builder.gep(args[0], [context.cast(builder, args[1], sig.args[1], types.intp)]))
        return context.get_dummy_value()

    return types.void(ptr, offset, value), codegen


@_jit
def _layout_of(rows, cols, s0, s1):
    """(BLAS transpose flag, leading dimension) of a row-major matrix with element strides ``s0``, ``s1``,
    or (0, 0) when neither its rows nor its columns have unit stride. The stride of a dimension of size 1
    never matters (numpy calls such views contiguous)."""
    row = s0 if rows > 1 else cols
    col = s1 if cols > 1 else 1
    if col == 1 and row >= cols:
        return _NOTRANS, max(row, 1)
    row = s0 if rows > 1 else 1
    col = s1 if cols > 1 else rows
    if row == 1 and col >= rows:
        return _TRANS, max(col, 1)
    return 0, 0


def _layout(x):
    """:func:`_layout_of` for a numpy array view (Python; the compiled code works on element strides)."""
    s = x.itemsize
    if x.strides[0] % s or x.strides[1] % s:
        return 0, 0
    return _layout_of(x.shape[0], x.shape[1], x.strides[0] // s, x.strides[1] // s)


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


def words(word):
    """An intrinsic viewing a byte pointer as a pointer to ``word`` values."""
    @intrinsic
    def cast(typingctx, ptr):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_data_type(word).as_pointer())

        return types.CPointer(word)(ptr), codegen
    return cast


_words4, _words8 = words(types.uint32), words(types.uint64)
#: a unit stride typed ``intp``, not the literal ``1``: Numba compiles a function once per literal argument
_UNIT = np.intp(1)


@intrinsic
def _alloc(typingctx, nbytes):
    """``nbytes`` uninitialised bytes from Numba's allocator, freed by :func:`_free` (no array object)."""
    def codegen(context, builder, sig, args):
        size = context.cast(builder, args[0], sig.args[0], types.intp)
        return builder.bitcast(context.nrt.allocate(builder, size), context.get_data_type(types.uint8).as_pointer())

    return types.CPointer(types.uint8)(nbytes), codegen


@intrinsic
def _free(typingctx, ptr):
    """Free a block of :func:`_alloc`."""
    def codegen(context, builder, sig, args):
        context.nrt.free(builder, builder.bitcast(args[0], ll_void_p))
        return context.get_dummy_value()

    return types.void(ptr), codegen


@_jit
def _copy(dst, d0, d1, src, s0, s1, rows, cols, size):
    """``dst[i, j] = src[i, j]`` for elements of ``size`` bytes (4 or 8) at element strides ``(s0, s1)``,
    ``(d0, d1)`` of byte pointers: each element one word."""
    if size == 8:
        p, q = _words8(src), _words8(dst)
        for i in range(rows):
            for j in range(cols):
                _store(q, i * d0 + j * d1, _load(p, i * s0 + j * s1))
    else:
        p4, q4 = _words4(src), _words4(dst)
        for i in range(rows):
            for j in range(cols):
                _store(q4, i * d0 + j * d1, _load(p4, i * s0 + j * s1))


@_jit
def _product(single, size, a, m, k, as0, as1, b, n, bs0, bs1, c, cs0, cs1, add):
    """``C = A B`` (``C += A B`` when ``add``) for strided views given by byte pointers and element strides,
    elements float32 (``single``, ``size`` 4) or float64: an operand BLAS cannot read is copied row-major
    first, and ``C`` is computed in a row-major copy when its rows are strided (``dot``). The products run
    in panels, each one ``?gemm``."""
    if m == 0 or n == 0 or (k == 0 and add):
        return
    if k == 0:                           # all-zero bytes are 0.0 in IEEE 754
        for i in range(m):
            for j in range(n):
                for byte in range(size):
                    _store(c, (i * cs0 + j * cs1) * size + byte, 0)
        return
    copy_a = _layout_of(m, k, as0, as1)[0] == 0
    copy_b = _layout_of(k, n, bs0, bs1)[0] == 0
    copy_c = _layout_of(m, n, cs0, cs1)[0] != _NOTRANS
    tmp_a = _alloc(m * k * size if copy_a else 0)
    tmp_b = _alloc(k * n * size if copy_b else 0)
    tmp_c = _alloc(m * n * size if copy_c else 0)
    if copy_a:
        _copy(tmp_a, k, _UNIT, a, as0, as1, m, k, size)
        a, as0, as1 = tmp_a, k, _UNIT
    if copy_b:
        _copy(tmp_b, n, _UNIT, b, bs0, bs1, k, n, size)
        b, bs0, bs1 = tmp_b, n, _UNIT
    out, os0 = (tmp_c, n) if copy_c else (c, cs0)
    if copy_c:
        _copy(tmp_c, n, _UNIT, c, cs0, cs1, m, n, size)
    ta, lda = _layout_of(m, k, as0, as1)
    tb, ldb = _layout_of(k, n, bs0, bs1)
    ldc = max(os0 if m > 1 else n, 1)     # the output's rows have unit stride
    beta = 1.0 if add else 0.0
    wm, wk, wn = _panels(m, k, n)
    for i in range(0, m, wm):
        for j in range(0, n, wn):
            for q in range(0, k, wk):
                pm, pk, pn = min(wm, m - i), min(wk, k - q), min(wn, n - j)
                # column-major view: C^T (n x m) = B^T (n x k) @ A^T (k x m); a row-major matrix is its
                # transpose there
                _xxgemm(single, tb, ta, pn, pm, pk, _at(b, (q * bs0 + j * bs1) * size), ldb,
                        _at(a, (i * as0 + q * as1) * size), lda, beta if q == 0 else 1.0,
                        _at(out, (i * os0 + j) * size), ldc)
    if copy_c:
        _copy(c, cs0, cs1, tmp_c, n, _UNIT, m, n, size)
    _free(tmp_a)
    _free(tmp_b)
    _free(tmp_c)


# ---- the product as one external function ------------------------------------------------------------------
# A stage that called the code above had Numba link it in and LLVM optimise it again with the stage: about
# 0.3 s of compile time per caller and array type, 1.45 of the 4.5 s of an LSTM's training kernel. Instead the
# code above is compiled once into a C-callable function (a ``cfunc``, cached) on byte pointers that serves
# float32 and float64 alike (one compile, not one per dtype: it was 1.2-1.5 s of a first-ever compile each),
# registered with LLVM under a fixed name, and ``dot`` passes pointers, shapes and element strides to it.
# Cached stages refer to the name only, so they pick up a change of the code above without being rebuilt;
# change the name (``VERSION``) when the C signature changes.

def load_numba_blas() -> None:
    """Load the BLAS that Numba's ``np.dot`` calls, ``scipy.linalg.cython_blas``, if it is not loaded yet: that
    one extension module directly (2 ms) instead of through ``scipy.linalg``'s package imports (0.25 s, half of
    a cached kernel's load time, measured); any failure falls back to the ordinary import."""
    name = "scipy.linalg.cython_blas"
    if name in sys.modules:
        return
    try:
        folder = Path(importlib.util.find_spec("scipy").origin).parent / "linalg"
        path = next(folder / f"cython_blas{sfx}" for sfx in importlib.machinery.EXTENSION_SUFFIXES
                    if (folder / f"cython_blas{sfx}").exists())
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    except Exception:                    # noqa: BLE001 (any trouble: the ordinary, slower import)
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _entry():
    byte = types.CPointer(types.uint8)
    sig = types.void(types.intp, types.intp,                                    # float32?, element bytes
                     byte, types.intp, types.intp, types.intp, types.intp,      # A: data, m, k, strides
                     byte, types.intp, types.intp, types.intp,                  # B: data, n, strides
                     byte, types.intp, types.intp,                              # C: data, strides
                     types.intp)                                                # 1: C += A B
    return external(sig, _product.py_func)


def external(sig, py_func):
    """``py_func`` compiled as a cached C-callable function (``numba.cfunc``) of signature ``sig``; a cache
    entry that cannot be read is dropped and the function compiled again."""
    try:
        return numba.cfunc(sig, cache=True, nogil=True)(py_func)
    except Exception:                    # noqa: BLE001 (an unreadable cache entry: drop it, compile again)
        index = Path(FunctionCache(py_func)._cache_file._index_path)
        for old in index.parent.glob(index.stem + "*"):
            old.unlink(missing_ok=True)
        return numba.cfunc(sig, cache=True, nogil=True)(py_func)


tolerate_corrupt_entries(sys.modules[__name__])   # the helpers above: an unreadable Numba cache entry is a miss
load_numba_blas()       # before Numba's BLAS check, which would import all of scipy.linalg
#: the external function's name (named in every generated module), for both dtypes
VERSION = "rnnc_gemm_3"
#: the element types it multiplies
DTYPES = (types.float32, types.float64)
_ENTRY = _entry()
llvm.add_symbol(VERSION, _ENTRY.address)


@intrinsic
def _call(typingctx, a, b, out, add):
    arrays = (a, b, out)
    if not all(isinstance(x, types.Array) and x.ndim == 2 for x in arrays):
        raise TypingError(f"gemm needs three 2-D arrays, got {a}, {b}, {out}")
    dtype = out.dtype
    if dtype not in DTYPES or a.dtype != dtype or b.dtype != dtype:
        raise TypingError(f"gemm needs float32 or float64 arrays of one dtype, got {a.dtype}, {b.dtype}, {dtype}")

    def codegen(context, builder, sig, args):
        intp = context.get_value_type(types.intp)
        size = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(dtype)))
        parts = []
        for ty, val in zip(sig.args[:3], args[:3]):
            ary = context.make_array(ty)(context, builder, val)
            strides = [builder.sdiv(st, size) for st in cgutils.unpack_tuple(builder, ary.strides)]
            parts.append((builder.bitcast(ary.data, ll_void_p), cgutils.unpack_tuple(builder, ary.shape), strides))
        (ad, (m, k), (as0, as1)), (bd, (_, n), (bs0, bs1)), (cd, _, (cs0, cs1)) = parts
        flag = context.cast(builder, args[3], sig.args[3], types.intp)
        single = context.get_constant(types.intp, int(dtype == types.float32))
        fnty = ir.FunctionType(ir.VoidType(), [intp, intp, ll_void_p, intp, intp, intp, intp, ll_void_p, intp, intp,
                                               intp, ll_void_p, intp, intp, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, VERSION)
        builder.call(fn, (single, size, ad, m, k, as0, as1, bd, n, bs0, bs1, cd, cs0, cs1, flag))
        return context.get_constant(types.intp, 0)

    return types.intp(a, b, out, add), codegen


# ``dot`` and ``dot_add`` are inlined into their callers: no Numba function of their own per array type (0.1 s of
# compile time each); cached for calls from Python
_inline = numba.njit(cache=True, nogil=True, inline="always")


@_inline
def dot(a, b, out):
    """:math:`Y = A B` into ``out`` (``(m, k) @ (k, n)``), in panels (module docstring). Any strided 2-D
    views: an operand is copied only when neither its rows nor its columns have unit stride, and ``out``
    is written through a temporary only when its rows do not. The caller's compiled code holds only a call
    of the external function (see ``VERSION``)."""
    return _call(a, b, out, 0)


@_inline
def dot_add(a, b, out):
    """:math:`Y \\mathrel{+}= A B` (``out``), as :func:`dot`."""
    return _call(a, b, out, 1)
