"""Per-step gate products apart or merged: the measurement behind the CPU pipeline's merge rule
(``merge_matmul.SCAN_MAX_ROWS``, ``merge_sums_cpu``).

    python benchmarks/step_products.py

One thread, float32, ``gk.dot`` called in a loop inside one Numba function (as a scan step calls it):

* forward: four ``(m, H) @ (H, H)`` gate products against one ``(m, H) @ (H, 4H)`` on the stacked matrices;
* backward: four ``(m, H) @ (H, H)`` products of the gate adjoints plus their sum, against one
  ``(m, 4H) @ (4H, H)`` on the stacked adjoints.

Prints the median µs per step of each and the ratio apart / merged (> 1: merging is faster).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from rnnc.backends.cpu import gemm as gk  # noqa: E402

SHAPES = [(8, 64), (16, 64), (16, 128), (32, 128), (32, 256), (64, 256), (64, 512), (128, 512)]


@numba.njit(nogil=True)
def _four(a, b0, b1, b2, b3, o0, o1, o2, o3, n):
    for _ in range(n):
        gk.dot(a, b0, o0)
        gk.dot(a, b1, o1)
        gk.dot(a, b2, o2)
        gk.dot(a, b3, o3)
    return 0


@numba.njit(nogil=True)
def _four_summed(g, b0, b1, b2, b3, o0, o1, o2, o3, out, n):
    h = out.shape[1]
    for _ in range(n):
        gk.dot(g[:, 0:h], b0, o0)
        gk.dot(g[:, h:2 * h], b1, o1)
        gk.dot(g[:, 2 * h:3 * h], b2, o2)
        gk.dot(g[:, 3 * h:], b3, o3)
        for i in range(out.shape[0]):
            for j in range(h):
                out[i, j] = o0[i, j] + o1[i, j] + o2[i, j] + o3[i, j]
    return 0


@numba.njit(nogil=True)
def _one(a, b, o, n):
    for _ in range(n):
        gk.dot(a, b, o)
    return 0


def _median_us(fn, args, n, rounds=15) -> float:
    fn(*args, 2)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(*args, n)
        times.append((time.perf_counter() - t0) / n)
    return 1e6 * float(np.median(times))


def main() -> None:
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.random(shape, dtype=np.float32)

    print(f"{'rows':>5} {'H':>4} | forward apart / merged, us | backward apart + sum / merged, us")
    for m, h in SHAPES:
        n = max(10, 2_000_000 // (m * h * h))
        a, parts, outs = r(m, h), [r(h, h) for _ in range(4)], [r(m, h) for _ in range(4)]
        fwd = _median_us(_four, (a, *parts, *outs), n), _median_us(_one, (a, r(h, 4 * h), r(m, 4 * h)), n)
        g, out = r(m, 4 * h), r(m, h)
        bwd = _median_us(_four_summed, (g, *parts, *outs, out), n), _median_us(_one, (g, r(4 * h, h), out), n)
        print(f"{m:>5} {h:>4} | {fwd[0]:9.2f} / {fwd[1]:9.2f}  ({fwd[0] / fwd[1]:.2f}x) "
              f"| {bwd[0]:9.2f} / {bwd[1]:9.2f}  ({bwd[0] / bwd[1]:.2f}x)")


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
