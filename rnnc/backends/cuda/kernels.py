"""Hand-written CUDA kernels the generated modules call (imported there as ``lib``): the tiled matrix product.

:func:`gemm` computes :math:`C = \\mathrm{op}(A)\\,\\mathrm{op}(B)` for 2-D device arrays, where
:math:`\\mathrm{op}(A) = A^T` when ``ta`` is set. Each block of ``TILE × TILE`` threads owns one tile of ``C``
and walks the shared dimension one tile at a time, staging both operand tiles in shared memory::

    for k0 in range(0, K, TILE):
        sA[ty, tx] = op(A)[row, k0 + tx];  sB[ty, tx] = op(B)[k0 + ty, col]     # one load per thread
        syncthreads()
        acc += sum_k sA[ty, k] * sB[k, tx]
        syncthreads()
    C[row, col] = acc

Map stages call it once over all steps × batch rows (``Y (T·B, M) = X (T·B, N) · W^T``), scans once per step,
and parameter gradients once over all rows (``dW (M, N) = G^T (M, T·B) · X (T·B, N)``).
"""
from __future__ import annotations

import functools

import numpy as np
from numba import config, cuda

TILE = 4 if config.ENABLE_CUDASIM else 16        # the simulator runs a Python thread per CUDA thread


@functools.cache
def gemm_kernel(dtype: str, tile: int = TILE):
    """The tiled product kernel for ``dtype`` ("float32"/"float64") and ``tile``."""
    F = np.dtype(dtype).type

    @cuda.jit(cache=True)
    def gemm_tiled(A, B, C, ta, tb, K):
        sA = cuda.shared.array((tile, tile), F)
        sB = cuda.shared.array((tile, tile), F)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.y * tile + ty
        col = cuda.blockIdx.x * tile + tx
        M, N = C.shape
        acc = F(0.0)
        for k0 in range(0, K, tile):
            ka, kb = k0 + tx, k0 + ty
            if row < M and ka < K:
                sA[ty, tx] = A[ka, row] if ta else A[row, ka]
            else:
                sA[ty, tx] = F(0.0)
            if col < N and kb < K:
                sB[ty, tx] = B[col, kb] if tb else B[kb, col]
            else:
                sB[ty, tx] = F(0.0)
            cuda.syncthreads()
            for k in range(tile):
                acc += sA[ty, k] * sB[k, tx]
            cuda.syncthreads()
        if row < M and col < N:
            C[row, col] = acc

    return gemm_tiled


def gemm(A, B, C, ta: int, tb: int) -> None:
    """``C[:] = op(A) @ op(B)`` on the device (see the module docstring)."""
    M, N = C.shape
    K = A.shape[0] if ta else A.shape[1]
    kern = gemm_kernel(str(C.dtype))
    grid = ((N + TILE - 1) // TILE, (M + TILE - 1) // TILE)
    kern[grid, (TILE, TILE)](A, B, C, ta, tb, K)


_COOP_CAP: dict = {}


def grid_blocks(kernel, args: tuple, threads: int, want: int) -> int:
    """Blocks for a cooperative (grid-synchronised) launch of ``kernel(*args)``: ``want``, capped at the
    number of blocks of ``threads`` threads the device can keep resident at once (more would make
    ``grid.sync()`` wait forever, so CUDA refuses the launch). The simulator supports cooperative grids of
    one block only, so there it is always 1."""
    if config.ENABLE_CUDASIM:
        return 1
    key = (kernel, threads)
    if key not in _COOP_CAP:
        compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
        _COOP_CAP[key] = compiled.max_cooperative_grid_blocks(threads)
    return max(1, min(int(want), _COOP_CAP[key]))


def empty(shape, dtype):
    """A zero-filled device array (buffers are allocated once per shape and reused)."""
    return cuda.to_device(np.zeros(shape, dtype=dtype))
