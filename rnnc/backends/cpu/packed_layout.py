"""The packed layout of a scan step's weights (:mod:`rnnc.backends.cpu.kernels_packed`), without Numba: a
``(k, n)`` matrix ``B`` as ``n / NR`` panels of ``NR`` columns, ``Bp[p, q, j] = B[q, p NR + j]``, made by one
numpy statement in ``run()``'s prologue."""
from __future__ import annotations

#: columns per panel (``NR``): two 512-bit vectors of the dtype
PANEL_WIDTH = {"float32": 32, "float64": 16}
#: the prefix of the names of the packed product's external functions (``kernels_packed``, one per dtype), named
#: in generated code; change it with their C signature
PACKED_VERSION = "rnnc_packed_2"


def packed_symbol(dtype: str) -> str:
    """The name of the packed product's external function for ``dtype``."""
    return f"{PACKED_VERSION}_{dtype}"


def packs(n: int, dtype: str) -> bool:
    """Can a product with ``n`` output columns read packed weights (``n`` a multiple of the panel width)?"""
    return n % PANEL_WIDTH[dtype] == 0


def packed_shape(k: int, n: int, dtype: str) -> tuple:
    """``(n / NR, k, NR)``: the packed array of a ``(k, n)`` matrix."""
    nr = PANEL_WIDTH[dtype]
    if n % nr:
        raise ValueError(f"packed weights: {n} columns are not a multiple of the panel width {nr}")
    return n // nr, k, nr


def pack_statement(out: str, src: str, shape: tuple) -> str:
    """The numpy statement filling ``out`` (of ``shape``, :func:`packed_shape`) from the C-contiguous matrix
    ``src``: ``out[p, q, j] = src[q, p NR + j]``, one strided copy."""
    panels, k, nr = shape
    return f"np.copyto({out}, {src}.reshape(({k}, {panels}, {nr})).transpose((1, 0, 2)))"
