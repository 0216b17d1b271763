"""One-thread GFLOP/s of Numba's ``np.dot`` (one BLAS call) against rnnc's paneled ``gemm.dot`` on the products
an RNN's kernels run: a scan step's (rows of one thread's block) and a map stage's (all steps x batch).

    python benchmarks/gemm_panels.py [--dtype float32|float64] [--quick]

Prints, per shape ``(m, k) @ (k, n)``, both rates and their ratio (best of 5 timings of a loop of calls).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from rnnc.backends.cpu import gemm  # noqa: E402
from rnnc.backends.cpu.gemm import load_numba_blas  # noqa: E402

STEP = [(m, k, n) for m in (8, 16, 32, 64) for k, n in ((128, 512), (512, 128), (256, 1024), (1024, 256),
                                                         (256, 768), (512, 2048), (64, 64), (128, 128))]
MAP = [(1600, 64, 512), (1600, 512, 64), (3200, 128, 1024), (3200, 1024, 128), (800, 256, 2048)]
QUICK = [(16, 128, 512), (16, 512, 128), (32, 256, 1024), (64, 512, 2048), (1600, 64, 512)]


@numba.njit(nogil=True)
def _blas_loop(a, b, out, reps):
    for _ in range(reps):
        np.dot(a, b, out)


@numba.njit(nogil=True)
def _panel_loop(a, b, out, reps):
    for _ in range(reps):
        gemm.dot(a, b, out)


def _rate(fn, a, b, out, reps) -> float:
    fn(a, b, out, 1)
    best = min(_timed(fn, a, b, out, reps) for _ in range(5))
    return 2.0 * a.shape[0] * a.shape[1] * b.shape[1] * reps / best / 1e9


def _timed(fn, a, b, out, reps) -> float:
    t0 = time.perf_counter()
    fn(a, b, out, reps)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--quick", action="store_true", help="five shapes only")
    args = ap.parse_args()
    load_numba_blas()
    rng = np.random.default_rng(0)
    print(f"{'(m, k, n)':<20} {'np.dot':>8} {'panels':>8} {'ratio':>6}   panel (wm, wk, wn)   [GFLOP/s, 1 thread, "
          f"{args.dtype}]")
    with threadpool_limits(1):
        for m, k, n in QUICK if args.quick else STEP + MAP:
            a = rng.standard_normal((m, k)).astype(args.dtype)
            b = rng.standard_normal((k, n)).astype(args.dtype)
            out = np.empty((m, n), args.dtype)
            reps = max(3, int(3e8 / (2 * m * k * n)))
            whole, panels = _rate(_blas_loop, a, b, out, reps), _rate(_panel_loop, a, b, out, reps)
            np.testing.assert_allclose(out, a @ b, rtol=1e-3, atol=1e-3 * k)
            print(f"{str((m, k, n)):<20} {whole:8.0f} {panels:8.0f} {panels / whole:6.2f}   "
                  f"{gemm.panels(m, k, n)}", flush=True)


if __name__ == "__main__":
    main()
