"""The parallel image kernels give bit-identical results on one thread and on every Numba thread.

Each kernel in :data:`rnnc.backends.cpu.kernels_image.PARALLEL` splits its work over samples, channels or a
fixed number of parts (``prange``); a thread never shares a sum with another, and partial sums are combined in
a fixed order, so the thread count cannot change a bit of the result (the flagship's runs are reproducible on
any machine). The maps here have sample and channel counts that do not divide evenly between the threads.

A whole model with image kernels and SpatialRNN sweeps (``image_cases.classifier``) too: its sweeps, row-local
map pieces and row-blocked products run as a fixed number of row blocks (``kernel.IMAGE_ROW_PARTS``) on
Numba's threads, so its loss and gradients are the same bits on 1, 2 and 3 threads.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from paths import CACHE_DIR, TESTS

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

from image_cases import igrad_regions  # noqa: E402

from rnnc.backends.cpu import kernels_image as imk  # noqa: E402

N, C, H, W, O = 37, 3, 9, 8, 5
GEO = (1, 2, 2, 1, 2, 1)                  # conv stride (1, 2), padding (2, 1), dilation (2, 1)
POOL = (3, 3, 2, 2, 1, 1)                 # window, stride, padding
PH, PW = (H + 2 - 3) // 2 + 1, (W + 2 - 3) // 2 + 1


def _conv(rng, dtype, budget) -> dict:
    """Forward, input gradient and weight gradient (on the forward's columns and filling its own), on full
    columns (``GEO``) and over in-range taps by region (the ``_regions`` kernels; 4x4 maps, dilation 2,
    padding 2)."""
    out = {}
    for tag, (h, w_, geo) in {"": (H, W, GEO), "_regions": (4, 4, (1, 1, 2, 2, 2, 2))}.items():
        ho, wo = (h + 2 * geo[2] - 2 * geo[4] - 1) // geo[0] + 1, (w_ + 2 * geo[3] - 2 * geo[5] - 1) // geo[1] + 1
        x = rng.standard_normal((N, C, h, w_)).astype(dtype)
        w = rng.standard_normal((O, C, 3, 3)).astype(dtype)
        g = rng.standard_normal((N, O, ho, wo)).astype(dtype)
        k, p = C * 9, ho * wo
        cols, gm = np.zeros(N * k * p, dtype), np.zeros(N * O * p, dtype)
        y, dx, dw, dw_fill = np.zeros(g.shape, dtype), np.zeros_like(x), np.zeros_like(w), np.zeros_like(w)
        getattr(imk, "conv2d_fwd" + tag)(x, w, cols, gm, y, *geo, budget)
        getattr(imk, "conv2d_wgrad" + tag)(g, x, cols, False, gm, dw, *geo, budget)
        getattr(imk, "conv2d_wgrad" + tag)(g, x, np.zeros_like(cols), True, gm, dw_fill, *geo, budget)
        if tag:
            igrad_regions(g, w, dx, *geo[2:], budget)
        else:
            imk.conv2d_igrad(g, w, gm, np.zeros_like(cols), dx, *geo, budget)
        out |= {f"conv y{tag}": y, f"conv dW{tag}": dw, f"conv dW (fill){tag}": dw_fill, f"conv dx{tag}": dx}
    return out


def _pool(rng, dtype) -> dict:
    """Max and average pooling, their gradients, and the max-pool select (the gradient's own gradient)."""
    x = rng.integers(-3, 4, (N, C, H, W)).astype(dtype)          # many ties: the first maximum must win
    g = rng.standard_normal((N, C, PH, PW)).astype(dtype)
    gx = rng.standard_normal(x.shape).astype(dtype)
    out = {name: np.zeros((N, C, PH, PW), dtype) for name in ("max", "avg", "max select")}
    out |= {name: np.zeros_like(x) for name in ("max grad", "avg grad")}
    imk.maxpool(x, out["max"], *POOL)
    imk.maxpool_route(x, g, out["max grad"], *POOL, False)
    imk.maxpool_route(x, gx, out["max select"], *POOL, True)
    idx = np.zeros((N, C, PH, PW), np.int64)
    out |= {"max (argmax kept)": np.zeros((N, C, PH, PW), dtype), "max scatter": np.zeros_like(x),
            "max select (scatter)": np.zeros((N, C, PH, PW), dtype)}
    imk.maxpool_argmax(x, out["max (argmax kept)"], idx, *POOL)
    imk.maxpool_scatter(idx, g, out["max scatter"], False)
    imk.maxpool_scatter(idx, gx, out["max select (scatter)"], True)
    for kept, searched in (("max (argmax kept)", "max"), ("max scatter", "max grad"),
                           ("max select (scatter)", "max select")):
        np.testing.assert_array_equal(out[kept], out[searched], err_msg=kept)
    imk.avgpool(x, out["avg"], *POOL)
    imk.avgpool_grad(g, out["avg grad"], *POOL)
    return out


def _norm(rng, dtype, channels) -> dict:
    """Channel mean and its spread, the batch-norm statistics, normalisation and both backward kernels (with
    few channels each channel's samples are summed in blocks, ``kernels_image.SUM_ITEMS``)."""
    x = (3.0 + rng.standard_normal((N, channels, H * W))).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.random(channels).astype(dtype), rng.random(channels).astype(dtype)
    out = {"mean": np.zeros(channels, dtype), "spread": np.zeros_like(x), "stats": np.zeros(2 * channels, dtype),
           "bn": np.zeros_like(x), "sums": np.zeros(2 * channels, dtype), "bn dx": np.zeros_like(x)}
    imk.channel_mean(x, out["mean"])
    imk.channel_spread(gamma, out["spread"], N * H * W)
    imk.bn_stats(x, out["stats"])
    imk.bn_apply(x, out["stats"], gamma, beta, True, 1e-5, out["bn"])
    imk.bn_sums(g, x, out["stats"], 1e-5, out["sums"])
    imk.bn_input_grad(g, x, out["stats"], out["sums"], gamma, True, 1e-5, out["bn dx"])
    out["bn dx masked"] = np.zeros_like(x)
    imk.bn_input_grad_masked(g, x, out["stats"], out["sums"], gamma, True, 1e-5, x - 3.0, out["bn dx masked"])
    np.testing.assert_array_equal(out["bn dx masked"], out["bn dx"] * (x > 3.0))
    x64 = x.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out["mean"], x64.mean(axis=(0, 2)), rtol=tol)
    np.testing.assert_allclose(out["stats"], np.r_[x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))], rtol=tol)
    return out


def _all(dtype, budget, channels) -> dict:
    rng = np.random.default_rng(11)
    return {**_conv(rng, dtype, budget), **_pool(rng, dtype), **_norm(rng, dtype, channels)}


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one Numba thread here")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("budget, channels", [(1, 1), (500, 3), (imk.CHUNK_FLOATS, 16)])
def test_image_kernels_do_not_depend_on_the_thread_count(dtype, budget, channels):
    """Conv (forward, input and weight gradients; one sample per chunk, a few, all), pooling and its gradients,
    channel means and batch norm forward and backward: the same bits with 1 and 2 Numba threads."""
    saved = numba.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results.append(_all(dtype, budget, channels))
    finally:
        numba.set_num_threads(saved)
    one, two = results
    for name in one:
        assert one[name].dtype == dtype and np.isfinite(one[name]).all(), name
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


CASES = [(dtype, budget, channels) for dtype in (np.float32, np.float64)
         for budget, channels in ((1, 1), (500, 3), (imk.CHUNK_FLOATS, 16))]


def compare_thread_counts(counts) -> None:
    """Every case above on each of ``counts`` Numba threads: the same bits as on the first (run in a process
    whose ``NUMBA_NUM_THREADS`` allows the most of them)."""
    saved = numba.get_num_threads()
    try:
        for dtype, budget, channels in CASES:
            results = []
            for threads in counts:
                numba.set_num_threads(threads)
                results.append(_all(dtype, budget, channels))
            for other, threads in zip(results[1:], counts[1:]):
                for name in results[0]:
                    np.testing.assert_array_equal(results[0][name], other[name],
                                                  err_msg=f"{name}, {dtype.__name__}, {threads} threads")
    finally:
        numba.set_num_threads(saved)


def test_three_threads_give_the_same_bits_as_one_and_two():
    """With three Numba threads (more than this machine's cores: the chunks, parts and channels are dealt
    differently again) every kernel still gives the bits of one and two threads."""
    tests = str(Path(__file__).parent)
    code = (f"import sys; sys.path.insert(0, {tests!r}); sys.path.insert(0, {str(TESTS)!r}); "
            "import test_image_threads as t; t.compare_thread_counts((1, 2, 3)); "
            "t.compare_model_thread_counts((1, 3), ('float32',)); print('same bits')")
    env = {**os.environ, "NUMBA_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "same bits" in out.stdout, out.stderr[-3000:]


MODEL_BATCH = 37          # 2 row blocks (18 + 19 samples) of every sweep; 148 grid rows: 2 blocks of products


def model_results(threads: int, dtype: str) -> tuple:
    """The small SpatialRNN classifier's loss and gradients with ``threads=`` threads, its row blocks at least
    two; and how many calls ran on Numba's pool with two or more blocks (sweeps, row-local map pieces,
    products)."""
    from image_cases import classifier

    import rnnc as rc
    from rnnc.backends.cpu import blocks
    from rnnc.runtime import kernel

    m = classifier()
    rng = np.random.default_rng(3)
    x = (rng.random((MODEL_BATCH, 2, 8, 8)) * 4.0).astype(dtype)
    y = rng.integers(0, 3, MODEL_BATCH)
    params = {k: v.astype(dtype) for k, v in m.init_params(seed=1, dtype="float64").items()}
    seen, pool = [], blocks._numba_pool

    def spy(calls):
        seen.append(len(calls))
        return pool(calls)
    blocks._numba_pool, parts = spy, kernel.IMAGE_ROW_PARTS
    kernel.IMAGE_ROW_PARTS = max(2, parts)
    try:
        loss, grads = rc.compile(m, dtype=dtype, threads=threads).loss_and_grad({"x": x, "y": y}, params)
    finally:
        blocks._numba_pool, kernel.IMAGE_ROW_PARTS = pool, parts
    return loss, grads, len(seen)


def compare_model_thread_counts(counts, dtypes=("float32", "float64")) -> None:
    """:func:`model_results` on each of ``counts`` threads in each of ``dtypes``: the same bits as on the first
    (the three-thread child compares one dtype: the two-thread test covers both; 25 s less of the suite)."""
    for dtype in dtypes:
        (loss, grads, pooled), *others = [model_results(n, dtype) for n in counts]
        assert pooled > 0 and np.isfinite(loss)
        for (other_loss, other, _), n in zip(others, counts[1:]):
            assert np.array_equal(loss, other_loss), f"loss, {dtype}, {n} threads"
            for name in grads:
                np.testing.assert_array_equal(grads[name], other[name], err_msg=f"{name}, {dtype}, {n} threads")


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one Numba thread here")
def test_sweeps_on_two_threads_give_the_bits_of_one():
    """A model with image kernels and SpatialRNN sweeps (conv, batch norm, max pool, a SpatialRNN block, global
    pooling): its row blocks run on Numba's threads, and the loss and every gradient are the same bits with
    ``threads=1`` and ``threads=2``."""
    from rnnc.runtime import kernel

    assert MODEL_BATCH // kernel.SPLIT_MIN_ROWS >= 2
    compare_model_thread_counts((1, 2))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one Numba thread here")
def test_blocks_on_numba_threads_cover_every_row_once_and_raise_a_blocks_error():
    """``run_blocks`` on Numba's pool (as in a module with image kernels): every row once for any number of
    blocks, and an exception in a block is raised in the caller."""
    from rnnc.backends.cpu.blocks import on_numba_threads, run_blocks

    seen = np.zeros(23, np.int64)

    def mark(out, lo, hi):
        out[lo:hi] += 1

    def fail(lo, hi):
        if lo > 0:
            raise ValueError(f"block {lo}:{hi}")

    with on_numba_threads():
        for parts in (1, 2, 3, 5):
            seen[:] = 0
            run_blocks(mark, parts, 23, seen)
            assert (seen == 1).all()
        with pytest.raises(ValueError, match="block"):
            run_blocks(fail, 2, 10)
        run_blocks(mark, 2, 23, seen)           # the pool is free again after the error
    assert (seen == 2).all()


def test_the_kernels_tested_here_are_the_parallel_ones():
    """Every kernel of ``PARALLEL`` is covered above (a new parallel kernel needs its thread-count check)."""
    covered = {"conv2d_fwd", "conv2d_igrad", "conv2d_wgrad", "conv2d_fwd_regions", "conv2d_wgrad_regions",
               "maxpool", "maxpool_route", "maxpool_argmax",
               "maxpool_scatter", "avgpool", "avgpool_grad", "channel_mean", "channel_spread", "bn_stats", "bn_apply",
               "bn_sums", "bn_input_grad", "bn_input_grad_masked"}
    assert set(imk.PARALLEL) == covered
