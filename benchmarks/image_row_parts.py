"""The flagship's compiled training step with its row blocks (SpatialRNN sweeps, row-local map pieces,
row-blocked products) in 1 or more parts on Numba's threads (``rnnc.runtime.kernel.IMAGE_ROW_PARTS``),
alternating in one process with PyTorch's step, so every variant sees the same machine load.

    python benchmarks/image_row_parts.py [--variants 1,2,2s] [--widths 16,32,64,128] [--rounds 6] [--steps 10]
                                         [--rnnc-threads 1] [--no-torch]

A variant is a number of parts; a trailing ``s`` keeps the products in one block (sweeps and map pieces only).
Prints each variant's median and best step, the range of its per-round medians, images/s and the ratio to
PyTorch (2 threads), and the load average.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flagship as F  # noqa: E402
import reseg_classifier as R  # noqa: E402

from rnnc.runtime import kernel as K  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="1,2,2s")
    p.add_argument("--widths", type=R.int_tuple(4), default=R.FASHION_WIDTHS)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rnnc-threads", type=int, default=0, help="rc.compile's threads= (default: every Numba thread)")
    p.add_argument("--no-torch", action="store_true")
    a = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(2)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(a.batch, 1, 28, 28)).astype(np.float64)
    y = rng.integers(0, 10, size=a.batch)
    step, _ = F.rnnc_step(x, y, threads=a.rnnc_threads or None, widths=a.widths)
    plain = K.Kernel.blas_threads
    mode = {"v": "1"}

    def blas_threads(self, batch):
        K.IMAGE_ROW_PARTS = int(mode["v"].rstrip("s"))
        out = plain(self, batch)
        if mode["v"].endswith("s"):
            out["blocks"] = 1
        return out
    K.Kernel.blas_threads = blas_threads
    theirs = None if a.no_torch else F.torch_step(x, y, 2, widths=a.widths)
    variants = a.variants.split(",")
    times: dict = {v: [] for v in variants}
    if theirs:
        times["torch"] = []
    for v in variants:
        mode["v"] = v
        F.timed(step, 2)
    if theirs:
        F.timed(theirs, 2)
    load0 = os.getloadavg()[0]
    for _ in range(a.rounds):
        for v in variants:
            mode["v"] = v
            times[v] += F.timed(step, a.steps)
        if theirs:
            times["torch"] += F.timed(theirs, a.steps)
    print(f"widths {','.join(map(str, a.widths))}, batch {a.batch}, rnnc threads {a.rnnc_threads or 'default'}; "
          f"{a.rounds} rounds x {a.steps} steps; load average {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    for v, ts in times.items():
        ms = np.array(ts) * 1e3
        rounds = [np.median(ms[i * a.steps:(i + 1) * a.steps]) for i in range(a.rounds)]
        line = (f"{v:6s} median {np.median(ms):7.1f} ms, best {ms.min():7.1f} ms, rounds {min(rounds):.1f}-"
                f"{max(rounds):.1f}; {a.batch * 1e3 / np.median(ms):7.1f} images/s")
        if theirs:
            tm, tb = np.median(times["torch"]) * 1e3, min(times["torch"]) * 1e3
            line += f"; vs PyTorch {tm / np.median(ms):.2f} (median) {tb / ms.min():.2f} (best)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
