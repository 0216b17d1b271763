"""The transposed copies of ``run()``'s prologue (``cp.<name>`` in generated code): ``v = W^T`` and the stacks
``[U_i^T U_f^T ...]`` of an LSTM's gate matrices, copied on every call.

numpy copies a transposed view element by element along the destination's rows, reading the source down its
columns; with power-of-two widths every read of a column lands in the same few cache sets. OpenBLAS's
``?omatcopy`` transposes in register tiles instead. One core, float32: a 512 x 512 ``W^T`` 0.56 -> 0.073 ms,
512 x 2048 3.45 -> 0.37 ms, 128 x 512 0.15 -> 0.017 ms (``np.copyto(v, w.T)`` against ``?omatcopy``, median of
200). A transposed copy is exact either way (``alpha = 1``).

The routine is looked up once in the OpenBLAS libraries loaded in the process (scipy's, which Numba's products
call, or numpy's; LP64 or ILP64 symbols) and checked on a small matrix; a BLAS without it, or one that fails the
check, leaves numpy's copy in place.
"""
from __future__ import annotations

import ctypes

import numpy as np

#: fewest elements for which ``?omatcopy`` pays: below it numpy's copy is as fast (128 x 64: 4.5 against 6.9 us)
MIN_ELEMENTS = 128 * 128

_CBLAS_ROW_MAJOR, _CBLAS_TRANS = 101, 112
_ROUTINES: dict | None = None         # np.dtype -> ctypes function (rows, cols, src, lds, dst, ldd), or absent


def _candidates():
    """``(library path, symbol, int type)`` for each ``cblas_?omatcopy`` the loaded OpenBLAS builds might export."""
    try:
        from threadpoolctl import ThreadpoolController

        from rnnc.backends.cpu.gemm import load_numba_blas

        load_numba_blas()
        paths = [c.filepath for c in ThreadpoolController().select(internal_api="openblas").lib_controllers]
    except Exception:                     # noqa: BLE001 (no threadpoolctl or no OpenBLAS: numpy's copies)
        return
    for path in paths:
        for prefix in ("scipy_cblas_", "cblas_"):
            for suffix, int_type in (("", ctypes.c_int), ("64_", ctypes.c_int64)):
                yield path, prefix, suffix, int_type


def _bind(path, prefix, suffix, int_type, kind):
    """The ctypes function ``cblas_{kind}omatcopy`` of ``path``, or None."""
    try:
        fn = getattr(ctypes.CDLL(path), f"{prefix}{kind}omatcopy{suffix}")
    except (OSError, AttributeError):
        return None
    real = ctypes.c_float if kind == "s" else ctypes.c_double
    fn.argtypes = [ctypes.c_int, ctypes.c_int, int_type, int_type, real, ctypes.c_void_p, int_type,
                   ctypes.c_void_p, int_type]
    fn.restype = None
    return fn


def _works(fn, dtype) -> bool:
    """Whether ``fn`` transposes a 3 x 5 matrix into a wider destination exactly, touching nothing else."""
    src = np.arange(15, dtype=dtype).reshape(3, 5) + 0.5
    dst = np.full((5, 7), -1.0, dtype)
    fn(_CBLAS_ROW_MAJOR, _CBLAS_TRANS, 3, 5, 1.0, src.ctypes.data, 5, dst[:, 2:].ctypes.data, 7)
    want = np.full((5, 7), -1.0, dtype)
    want[:, 2:5] = src.T
    return bool(np.array_equal(dst, want))


def _routines() -> dict:
    global _ROUTINES
    if _ROUTINES is None:
        found: dict = {}
        for path, prefix, suffix, int_type in _candidates():
            for kind, dtype in (("s", np.dtype(np.float32)), ("d", np.dtype(np.float64))):
                fn = None if dtype in found else _bind(path, prefix, suffix, int_type, kind)
                if fn is not None and _works(fn, dtype):
                    found[dtype] = fn
        _ROUTINES = found
    return _ROUTINES


def _rows_contiguous(a) -> bool:
    return a.ndim == 2 and a.strides[1] == a.itemsize and a.strides[0] % a.itemsize == 0 and a.strides[0] > 0


def transpose_into(src, dst) -> None:
    """``dst = src^T`` for 2-D ``src`` ``(r, c)`` and ``dst`` ``(c, r)``: ``?omatcopy`` where both have
    contiguous rows, the same float dtype and at least :data:`MIN_ELEMENTS` elements, else numpy's copy."""
    fn = _routines().get(src.dtype) if src.size >= MIN_ELEMENTS and src.dtype == dst.dtype else None
    if fn is None or not (_rows_contiguous(src) and _rows_contiguous(dst)) or dst.shape != src.shape[::-1]:
        np.copyto(dst, src.T)
        return
    r, c = src.shape
    fn(_CBLAS_ROW_MAJOR, _CBLAS_TRANS, r, c, 1.0, src.ctypes.data, src.strides[0] // src.itemsize,
       dst.ctypes.data, dst.strides[0] // dst.itemsize)


def concat_last(parts: tuple, out) -> None:
    """``out = concatenate(parts, axis=-1)`` for 2-D ``out``: each part into its columns, a transposed view
    ``w.T`` of a matrix with contiguous rows by :func:`transpose_into` from ``w``."""
    col = 0
    for p in parts:
        dst = out[:, col:col + p.shape[-1]]
        if p.ndim == 2 and not p.flags.c_contiguous and _rows_contiguous(p.T):
            transpose_into(p.T, dst)
        else:
            np.copyto(dst, p)
        col += p.shape[-1]
