"""A scan step's product on packed weights against OpenBLAS: the measurement behind ``RenderOptions.packed_steps``
(rnnc/backends/cpu/kernels_packed.py).

    python benchmarks/packed_step.py [--rounds 6]

One thread, float32; each product called in a loop inside one Numba function (as a scan step calls it):
``pk.dot`` on weights packed once, and ``gk.dot`` (OpenBLAS's small-matrix kernels, in panels) on the
row-major weights. The shapes are the per-thread step products of the benchmark cells
(``benchmarks/rnn_cells.py``: 16 or 32 rows per thread, 4H or H columns) and a larger one. The two take
turns; prints each one's median and best GFLOP/s over the rounds and the median ratio packed / OpenBLAS
(> 1: packed is faster).
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

from rnnc.backends.cpu import gemm as gk  # noqa: E402
from rnnc.backends.cpu import kernels_packed as pk  # noqa: E402
from rnnc.backends.cpu.packed_layout import pack_statement, packed_shape  # noqa: E402

#: (rows, k, n): LSTM T50 B32 H128 forward / backward per thread, T100 B64 H256, GRU-size, a large step
SHAPES = [(16, 128, 512), (16, 512, 128), (32, 256, 1024), (32, 1024, 256), (8, 64, 256), (64, 512, 2048)]


@numba.njit(nogil=True)
def _packed_steps(a, bp, out, n):
    for _ in range(n):
        pk.dot(a, bp, out)
    return 0


@numba.njit(nogil=True)
def _blas_steps(a, b, out, n):
    for _ in range(n):
        gk.dot(a, b, out)
    return 0


def pack(b):
    out = np.empty(packed_shape(*b.shape, b.dtype.name), b.dtype)
    exec(pack_statement("out", "b", out.shape), {"np": np}, {"out": out, "b": b})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    cases = {}
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        cases[(m, k, n)] = (a, b, pack(b), np.zeros((m, n), np.float32))
    rates = {s: {"packed": [], "blas": []} for s in SHAPES}
    with threadpool_limits(1):
        for a, b, bp, out in cases.values():
            _packed_steps(a, bp, out, 1)
            _blas_steps(a, b, out, 1)
        for _ in range(args.rounds):
            for (m, k, n), (a, b, bp, out) in cases.items():
                reps = max(10, int(1e8 / (2 * m * k * n)))
                for name, fn, right in (("packed", _packed_steps, bp), ("blas", _blas_steps, b)):
                    t0 = time.perf_counter()
                    fn(a, right, out, reps)
                    rates[(m, k, n)][name].append(2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
    print("| (rows, k, n) | packed GFLOP/s median / best | OpenBLAS GFLOP/s median / best | packed / OpenBLAS |")
    print("|---|---|---|---|")
    for shape in SHAPES:
        p, b = np.array(rates[shape]["packed"]), np.array(rates[shape]["blas"])
        print(f"| {shape} | {np.median(p):.1f} / {p.max():.1f} | {np.median(b):.1f} / {b.max():.1f} | "
              f"{np.median(p / b):.2f}x |")


if __name__ == "__main__":
    main()
