"""The decorators of rnnc's precompiled Numba kernels (:mod:`kernels_image`, :mod:`kernels_conv`).

Every kernel is compiled once per dtype and cached on disk (``cache=True``), releases the GIL (``nogil``) and
divides as numpy does (``error_model="numpy"``: no ZeroDivisionError checks in the loops).
"""
from __future__ import annotations

import types

import numba

jit = numba.njit(cache=True, nogil=True, error_model="numpy")


def pjit(fn, **options):
    """The parallel kernel ``fn`` (``numba.prange`` over its work items, run on every Numba thread); its serial
    twin (the same code, ``prange`` as ``range``) goes into ``fn``'s module as ``<name>_serial``, for calls
    inside a scan's loop: a cached jitted function that calls a parallel one crashes when it is loaded from the
    cache (numba#8578)."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                              fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_serial"      # its own cache files
    fn.__globals__[twin.__name__] = numba.njit(cache=True, nogil=True, error_model="numpy", **options)(twin)
    return numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True, **options)(fn)


def pjit_sums(fn):
    """:func:`pjit` with reassociation allowed, so LLVM vectorises a loop's float64 sums (one channel's sums
    stay in one thread, in the same order whatever the thread count)."""
    return pjit(fn, fastmath={"reassoc"})
