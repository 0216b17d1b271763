"""What the benchmarks say about the machine: its measured float32 GEMM rate and its CPU's name."""
from __future__ import annotations

import time

import numpy as np


def gemm_peak(n: int = 1024) -> float:
    """GFLOP/s of the best of 20 numpy float32 n³ products (a peak: the best call, not the median), on the BLAS
    threads the caller allows."""
    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    a @ a
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def core_bound(threads: int, n: int = 1024) -> float:
    """An upper bound on ``threads`` cores' GEMM rate: ``threads`` times one core's best float32 n³ product
    (BLAS held to one thread): what cores each multiplying their own matrices can reach, and more than one product
    shared by the cores reaches (:func:`gemm_peak`)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return threads * gemm_peak(n)


def cpu_name() -> str:
    """The CPU's model name and LLVM's name for it (what Numba compiles for)."""
    import llvmlite.binding as llvm

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} (LLVM: {llvm.get_host_cpu_name()})"
