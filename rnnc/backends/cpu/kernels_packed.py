"""A scan step's product on weights packed once per call: :math:`Y = A B` with ``B`` ``(k, n)`` stored as
panels of ``NR`` columns, ``Bp[p, q, :] = B[q, p NR : (p + 1) NR]`` (packed by a numpy statement in ``run()``'s
prologue, :mod:`rnnc.backends.cpu.packed_layout`; ``pk.dot`` in the step).

Each ``MR x NR`` tile of ``Y`` is summed in vector registers over the whole inner dimension,

.. math:: Y_{i, pNR + j} = \\sum_q A_{iq} \\, (B_p)_{qj}, \\qquad i < MR,\\; j < NR,

one fused multiply-add per ``A`` element and vector of the panel's row (:func:`_tile`, LLVM vectors through a
Numba intrinsic), then stored once. The panel (``k NR`` values, 16 KB for ``k = 128``) stays in the L1 cache
while every row block of ``A`` passes over it.

Why: OpenBLAS's small-matrix kernels re-read ``B`` in its row-major layout on every call; a scan calls the
product once per step with the same ``B``. Single thread, float32, alternating rounds on a quiet machine
(``python benchmarks/packed_step.py``): at 32 and 64 rows 1.08-1.12x OpenBLAS's paneled calls (109-110 against
98-103 GFLOP/s), at 8 rows 1.03x, at 16 rows 1.00-1.06x; both within a few percent of the core's peak. A
row's sum runs over ``q`` in the same order whatever the row block, so a split scan's result does not depend on
how many blocks it has.

Compiled callers hold only a call of an external C-callable function, one per dtype (``packed_symbol(dtype)``;
the tile is typed, so it cannot serve both dtypes as gemm's byte-pointer function does), compiled or loaded from
rnnc's cache the first time a kernel of that dtype needs it (:func:`require`): a float32 kernel compiles no
float64 code.
"""
from __future__ import annotations

import numba
from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from rnnc.backends.cache import install_helper_locator
from rnnc.backends.cpu.gemm import _at, external
from rnnc.backends.cpu.packed_layout import PANEL_WIDTH, packed_symbol

#: rows of ``A`` per register tile
MR = 8
#: vectors per tile row: a panel is ``NV`` vectors wide (32 float32 or 16 float64 columns on 512-bit vectors)
NV = 2
#: vector lanes per dtype (512-bit vectors; LLVM splits them where the CPU has narrower ones)
LANES = {dtype: width // NV for dtype, width in PANEL_WIDTH.items()}


@intrinsic
def _tile(typingctx, a, lda, bp, c, ldc, k, rows, add):
    """``C[:rows, :NR] (+)= A[:rows, :k] @ P`` for one packed panel ``P`` (``k`` rows of ``NR`` values) on
    pointers: ``MR`` rows x ``NV`` vectors of accumulators carried through the ``q`` loop as SSA values (so
    they live in registers), one broadcast of ``A[i, q]`` and ``NV`` fused multiply-adds per row and ``q``.
    Rows past ``rows`` repeat the last row's loads and are not stored. ``add`` nonzero adds to ``C``."""
    sig = types.void(a, lda, bp, c, ldc, k, rows, add)

    def codegen(context, builder, sig, args):
        a_ptr, bp_ptr, c_ptr = args[0], args[2], args[3]
        lda_, ldc_, k_, rows_ = (context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 4, 5, 6))
        add_ = context.cast(builder, args[7], sig.args[7], types.intp)
        elem = context.get_data_type(sig.args[0].dtype)
        lanes = LANES[str(sig.args[0].dtype)]
        vec = ir.VectorType(elem, lanes)
        intp = context.get_value_type(types.intp)
        i32 = ir.IntType(32)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec, vec, vec]),
            f"llvm.fma.v{lanes}{'f32' if isinstance(elem, ir.FloatType) else 'f64'}")

        def const(v):
            return ir.Constant(intp, v)

        last = builder.sub(rows_, const(1))
        a_rows = [builder.gep(a_ptr, [builder.mul(builder.select(builder.icmp_signed("<", const(i), rows_),
                                                                  const(i), last), lda_)]) for i in range(MR)]
        zero = ir.Constant(vec, [ir.Constant(elem, 0.0)] * lanes)
        splat = ir.Constant(ir.VectorType(i32, lanes), [ir.Constant(i32, 0)] * lanes)
        entry = builder.block
        head = builder.append_basic_block("pk_head")
        body = builder.append_basic_block("pk_body")
        done = builder.append_basic_block("pk_done")
        builder.branch(head)

        builder.position_at_end(head)
        q = builder.phi(intp)
        q.add_incoming(const(0), entry)
        acc = [[builder.phi(vec) for _ in range(NV)] for _ in range(MR)]
        for row in acc:
            for phi in row:
                phi.add_incoming(zero, entry)
        builder.cbranch(builder.icmp_signed("<", q, k_), body, done)

        builder.position_at_end(body)
        panel_row = builder.gep(bp_ptr, [builder.mul(q, const(lanes * NV))])
        b = [builder.load(builder.bitcast(builder.gep(panel_row, [const(v * lanes)]), vec.as_pointer()), align=4)
             for v in range(NV)]
        summed = []
        for i in range(MR):
            x = builder.insert_element(ir.Constant(vec, ir.Undefined), builder.load(builder.gep(a_rows[i], [q])),
                                       ir.Constant(i32, 0))
            x = builder.shuffle_vector(x, ir.Constant(vec, ir.Undefined), splat)
            summed.append([builder.call(fma, [x, b[v], acc[i][v]]) for v in range(NV)])
        q.add_incoming(builder.add(q, const(1)), builder.block)
        for i in range(MR):
            for v in range(NV):
                acc[i][v].add_incoming(summed[i][v], builder.block)
        builder.branch(head)

        builder.position_at_end(done)
        adding = builder.icmp_signed("!=", add_, const(0))
        for i in range(MR):
            with cgutils.if_likely(builder, builder.icmp_signed("<", const(i), rows_)):
                c_row = builder.gep(c_ptr, [builder.mul(const(i), ldc_)])
                for v in range(NV):
                    ptr = builder.bitcast(builder.gep(c_row, [const(v * lanes)]), vec.as_pointer())
                    total = builder.select(adding, builder.fadd(acc[i][v], builder.load(ptr, align=4)), acc[i][v])
                    builder.store(total, ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _width(typingctx, ptr):
    """``NR`` for ``ptr``'s element type (a constant)."""
    width = PANEL_WIDTH[str(ptr.dtype)]

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, width)

    return types.intp(ptr), codegen


def _product(a, m, k, as0, as1, bp, panels, kp, nr, bs0, bs1, bs2, c, cm, cn, cs0, cs1, add):
    """``C (+)= A B`` on pointers to the elements and element strides, B packed; 0, or 1 when the shapes or
    strides do not fit (the caller raises). Compiled once per dtype (:func:`require`)."""
    if kp != k or cm != m or cn != panels * nr or nr != _width(a) or bs2 != 1 or bs1 != nr or bs0 != k * nr:
        return 1
    if m == 0 or cn == 0:
        return 0
    if (k > 1 and as1 != 1) or (cn > 1 and cs1 != 1):
        return 1
    for p in range(panels):
        for i in range(0, m, MR):
            _tile(_at(a, i * as0), as0, _at(bp, p * k * nr), _at(c, i * cs0 + p * nr), cs0, k, min(MR, m - i), add)
    return 0


# ---- one external function per dtype (as gemm's), compiled or loaded from the cache when a kernel first needs
# it: a float32 kernel compiles no float64 code. Callers hold only its call, by name (packed_symbol(dtype)).
_ENTRIES: dict = {}


def require(dtype: str) -> str:
    """Make the packed product for ``dtype`` ("float32" or "float64") callable by its name (compiled, or loaded
    from the cache, once per process) and return the name. Typing a call of :func:`dot` does it; a generated
    module calls it on import, as its cached stage functions name the function without being typed again."""
    name = packed_symbol(dtype)
    if dtype not in _ENTRIES:
        install_helper_locator()                  # cached in rnnc's cache folder, never beside the source
        ptr, n = types.CPointer(getattr(types, dtype)), types.intp
        sig = types.intp(ptr, n, n, n, n, ptr, n, n, n, n, n, n, ptr, n, n, n, n, n)
        entry = external(sig, _product)
        llvm.add_symbol(name, entry.address)
        _ENTRIES[dtype] = entry
    return name


@intrinsic
def _call(typingctx, a, bp, out, add):
    if not (isinstance(a, types.Array) and a.ndim == 2 and isinstance(out, types.Array) and out.ndim == 2
            and isinstance(bp, types.Array) and bp.ndim == 3):
        raise TypingError(f"pk.dot needs 2-D, 3-D (packed) and 2-D arrays, got {a}, {bp}, {out}")
    if a.dtype not in (types.float32, types.float64) or bp.dtype != a.dtype or out.dtype != a.dtype:
        raise TypingError(f"pk.dot needs float32 or float64 arrays of one dtype, got {a.dtype}, {bp.dtype}, "
                          f"{out.dtype}")

    name = require(str(a.dtype))

    def codegen(context, builder, sig, args):
        intp = context.get_value_type(types.intp)
        size = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(a.dtype)))
        values = []
        for ty, val in zip(sig.args[:3], args[:3]):
            ary = context.make_array(ty)(context, builder, val)
            values.append(ary.data)
            values += cgutils.unpack_tuple(builder, ary.shape)
            values += [builder.sdiv(st, size) for st in cgutils.unpack_tuple(builder, ary.strides)]
        flag = context.cast(builder, args[3], sig.args[3], types.intp)
        fnty = ir.FunctionType(intp, [v.type for v in values] + [intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        return builder.call(fn, [*values, flag])

    return types.intp(a, bp, out, add), codegen


# ``dot`` and ``dot_add`` are inlined into their callers (no Numba function of their own per array type) and not
# cached: compiled code loaded from a cache does not type its call again, so it would not call require().
_inline = numba.njit(nogil=True, inline="always")


@_inline
def dot(a, bp, out):
    """:math:`Y = A B` into ``out`` ``(m, n)`` from ``a`` ``(m, k)`` and ``B`` packed (``bp``, see
    :func:`pack_statement`). Rows of ``a`` and ``out`` may be strided (a row block, a wider buffer's
    columns); their elements must be contiguous, and the packed array C-contiguous."""
    if _call(a, bp, out, 0):
        raise ValueError("pk.dot: operands do not match the packed panels (shapes or strides)")
    return 0


@_inline
def dot_add(a, bp, out):
    """:math:`Y \\mathrel{+}= A B`, as :func:`dot`."""
    if _call(a, bp, out, 1):
        raise ValueError("pk.dot_add: operands do not match the packed panels (shapes or strides)")
    return 0
