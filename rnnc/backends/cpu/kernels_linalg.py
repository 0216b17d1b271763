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

import numba
import numpy as np

from rnnc.backends.cache import tolerate_corrupt_entries
from rnnc.backends.cpu import gemm
from rnnc.backends.cpu.blocks import run_calls

#: fewest rows in one block: below this a product stays one BLAS call
MIN_ROWS = 64

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


def _cuts(n: int, parts: int) -> list:
    return [(p * n // parts, (p + 1) * n // parts) for p in range(parts)]


def matmul_rows(a, b, out, threads: int) -> None:
    """:math:`Y = A B` (``out``), the rows of ``A`` and ``Y`` in blocks, one per thread."""
    n = a.shape[0]
    run_calls([(_matmul_block, (a, b, out, lo, hi)) for lo, hi in _cuts(n, blocks(n, threads))])


def outer_rows(g, x, out, threads: int) -> None:
    """:math:`G = \\sum_r g_r x_r^T = g^T x` (``out``), the rows ``r`` in blocks, one per thread; each block's
    partial product in its own array, then added in block order (the sum's rounding depends on the number of
    blocks, like a threaded BLAS's)."""
    n = g.shape[0]
    cuts = _cuts(n, blocks(n, threads))
    tmp = np.empty((len(cuts) - 1,) + out.shape, out.dtype)
    run_calls([(_outer_block, (g, x, out if p == 0 else tmp[p - 1], lo, hi)) for p, (lo, hi) in enumerate(cuts)])
    for part in tmp:
        out += part


tolerate_corrupt_entries(sys.modules[__name__])   # an unreadable Numba cache entry is a miss
