"""Matrix products over all steps × batch in blocks of rows on threads (``lak.<name>`` in generated code).

A map stage's product over all steps × batch (hoisted input products, weight gradients) is split into blocks
of rows, one per thread, each block single-threaded BLAS calls (:func:`rnnc.backends.cpu.gemm.dot`, in
panels) in a ``nogil`` Numba function, the blocks run concurrently by
:func:`rnnc.backends.cpu.blocks.run_calls` (Python threads). Every parallel piece of an
RNN module (these and the split scans) then runs on the same few threads with one BLAS thread each:
OpenBLAS's own worker threads, and OpenMP's, keep spinning for a while after each call and fought a split
scan's threads for the two cores (an LSTM's split scans, T50 B32 H128, ran no faster than whole ones while
OpenBLAS had two threads; 3.5 against 5.8 ms with one).
"""
from __future__ import annotations

import sys
import weakref

import numba
import numpy as np

from rnnc.backends.cache import tolerate_corrupt_entries
from rnnc.backends.cpu import gemm
from rnnc.backends.cpu.blocks import run_calls

#: fewest rows in one block: below this a product stays one BLAS call
MIN_ROWS = 64
#: :func:`row_products`: bytes of the shared operand per chunk (kept in the core's L2 while every product
#: reads it), fewest rows per chunk, and the largest outer sums still added into once per chunk: 2 MB, so an LSTM's
#: T100 B64 weight gradients (1.5 MB) are chunked (1.02-1.08x faster step, six alternating rounds) while T50 B128's
#: (6 MB) are not (chunked: 0.88-0.98x)
CHUNK_BYTES = 2 ** 18
MIN_CHUNK = 128
MAX_SUM_BYTES = 2 ** 21

_jit = numba.njit(cache=True, nogil=True)


def blocks(n: int, threads: int) -> int:
    """How many row blocks ``n`` rows are dealt into: one per thread, each at least MIN_ROWS rows."""
    return max(1, min(threads, n // MIN_ROWS))


@_jit
def _matmul_block(a, b, out, lo, hi):
    gemm.dot(a[lo:hi], b, out[lo:hi])
    return 0


@_jit
def _outer_block(g, x, out, lo, hi):
    gemm.dot(g[lo:hi].T, x[lo:hi], out)
    return 0


@_jit
def _sum_block(g, out, lo, hi):
    out[:] = 0
    for i in range(lo, hi):
        for j in range(g.shape[1]):
            out[j] += g[i, j]
    return 0


def _cuts(n: int, parts: int) -> list:
    return [(p * n // parts, (p + 1) * n // parts) for p in range(parts)]


def matmul_rows(a, b, out, threads: int) -> None:
    """:math:`Y = A B` (``out``), the rows of ``A`` and ``Y`` in blocks, one per thread."""
    n = a.shape[0]
    run_calls([(_matmul_block, (a, b, out, lo, hi)) for lo, hi in _cuts(n, blocks(n, threads))])


def chunk_rows(a, sums: tuple) -> int:
    """Rows of ``a`` per chunk for :func:`row_products`: about ``CHUNK_BYTES`` of ``a`` (at least
    ``MIN_CHUNK`` rows, so that each outer sum's product has a useful inner dimension), or all rows (no
    chunks) when the outer sums are so big that adding into them once per chunk would cost more than
    reading ``a`` again."""
    if sum(s.nbytes for s in sums) > MAX_SUM_BYTES:
        return max(a.shape[0], 1)
    return max(MIN_CHUNK, CHUNK_BYTES // max(a.shape[1] * a.itemsize, 1))


def row_products(fn, a, args: tuple, sums: tuple, threads: int) -> None:
    """Products that read the rows of ``a``, run by ``fn(a, *args, *sums, lo, hi, step)`` (generated:
    :mod:`rnnc.backends.cpu.row_groups`) over row blocks ``[lo, hi)``, one per thread, in chunks of ``step``
    rows (:func:`chunk_rows`); each block's outer sums go to its own arrays (block 0's to ``sums``) and are
    added in block order, as in :func:`outer_rows`.

    LSTM training with dL/dx, T50 B32 I64 H128 (dx, dU, dW read the gate adjoints once instead of three
    times), a per-stage timer, two alternating pairs: the products 4.3-5.1 ms before, 3.6-3.8 ms after."""
    cuts = _cuts(a.shape[0], blocks(a.shape[0], threads))
    step = chunk_rows(a, sums)
    _summed_blocks(lambda part, lo, hi: (fn, (a, *args, *part, lo, hi, step)), cuts, sums)


def outer_rows(g, x, out, threads: int) -> None:
    """:math:`G = \\sum_r g_r x_r^T = g^T x` (``out``), the rows ``r`` in blocks, one per thread; each block's
    partial product in its own array, then added in block order (the sum's rounding depends on the number of
    blocks, like a threaded BLAS's)."""
    cuts = _cuts(g.shape[0], blocks(g.shape[0], threads))
    _summed_blocks(lambda part, lo, hi: (_outer_block, (g, x, part[0], lo, hi)), cuts, (out,))


def sum_rows(g, out, threads: int) -> None:
    """:math:`s = \\sum_r g_r` (``out``, a bias gradient over all steps x batch), the rows in blocks, one per
    thread, added in block order as in :func:`outer_rows`."""
    cuts = _cuts(g.shape[0], blocks(g.shape[0], threads))
    _summed_blocks(lambda part, lo, hi: (_sum_block, (g, part[0], lo, hi)), cuts, (out,))


def _summed_blocks(call, cuts: list, sums: tuple) -> None:
    """Run ``call(part, lo, hi)`` (a ``(function, args)`` pair) for each row block on its own thread; block 0
    writes ``sums``, the others arrays of their own, added into ``sums`` in block order afterwards."""
    spares = [_spares(s, len(cuts) - 1) for s in sums]
    parts = [sums] + [tuple(spare[p] for spare in spares) for p in range(len(cuts) - 1)]
    run_calls([call(parts[p], lo, hi) for p, (lo, hi) in enumerate(cuts)])
    for part in parts[1:]:
        for s, t in zip(sums, part):
            s += t


def planned_calls(name: str, *args) -> list:
    """``[(compiled function, arguments)]``: the calls ``<name>(*args)`` would make (one row block's, typed as
    every block's), for :func:`rnnc.runtime.precompile.planned`; nothing for a name without compiled calls."""
    if name == "matmul_rows":
        a, b, out, _ = args
        return [(_matmul_block, (a, b, out, 0, a.shape[0]))]
    if name == "row_products":
        fn, a, more, sums, _ = args
        return [(fn, (a, *more, *sums, 0, a.shape[0], chunk_rows(a, sums)))]
    if name == "outer_rows":
        g, x, out, _ = args
        return [(_outer_block, (g, x, out, 0, g.shape[0]))]
    if name == "sum_rows":
        g, out, _ = args
        return [(_sum_block, (g, out, 0, g.shape[0]))]
    return []


_SPARES: dict = {}      # id(sum array) -> arrays like it for blocks 1, 2, ... (dropped with the array)


def _spares(s, n: int) -> list:
    """``n`` arrays like ``s`` for the other blocks' partial sums, allocated once per array and reused (the
    sums are a kernel's work buffers, which live as long as their shapes do)."""
    spare = _SPARES.get(id(s))
    if spare is None:
        spare = _SPARES[id(s)] = []
        weakref.finalize(s, _SPARES.pop, id(s), None)
    while len(spare) < n:
        spare.append(np.empty_like(s))
    return spare


tolerate_corrupt_entries(sys.modules[__name__])   # an unreadable Numba cache entry is a miss
