"""Compiled CPU image ops (rnnc/backends/cpu/ops_image.py) agree with the interpreter: every image op and its
gradient ops applied directly (float64 to 1e-10; odd strides, padding and dilation; a convolution inside a
scan), and a small conv + BN + pool + SpatialRNN + global-pool classifier's loss and gradients (float64 to
1e-10, float32 to 1e-4).

Numba compiles are slow: three kernels in all, each built once per session (module-level cache), generated
modules cached under ``RNNC_CACHE_DIR``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from paths import CACHE_DIR, TESTS

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

from cache_cases import with_helpers  # noqa: E402
from compiled_check import close  # noqa: E402
from image_cases import IMAGE_OPS, classifier, ops_data, ops_model  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc.backends.cpu import kernels_image  # noqa: E402
from rnnc.backends.cpu.ops import missing_templates  # noqa: E402

B = 2
_CACHE: dict = {}


def compiled_ops():
    if "ops" not in _CACHE:
        m = ops_model()
        ins, ps = ops_data(m)
        f = rc.compile(m, dtype="float64")
        _CACHE["ops"] = (f.forward(ins, ps).outputs, rc.interpret(m, ins, ps, dtype="float64").outputs)
    return _CACHE["ops"]


def test_every_image_op_has_a_template():
    assert not set(IMAGE_OPS) & set(missing_templates())


@pytest.mark.parametrize("name", IMAGE_OPS + ["scan_conv", "scan_input_grad", "scan_weight_grad",
                                  "bcast_weight_grad", "bcast_maxpool_grad"])
def test_image_op_compiled_equals_interpreter(name):
    out, ref = compiled_ops()
    assert close(out[name], ref[name], 1e-10), name
    assert float(np.abs(ref[name]).max()) > 0          # the comparison is not of zeros


def classifier_case(dtype):
    if dtype not in _CACHE:
        m = _CACHE.setdefault("clf_model", classifier())
        rng = np.random.default_rng(3)
        batch = {"x": rng.random((3, 2, 8, 8)) * 4.0, "y": np.array([0, 2, 1])}
        params = m.init_params(seed=1, dtype="float64")
        params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}   # no zero biases
        f = rc.compile(m, dtype=dtype)
        cast = {k: np.asarray(v, dtype) for k, v in params.items()}
        _CACHE[dtype] = (f.loss_and_grad({"x": batch["x"].astype(dtype), "y": batch["y"]}, cast),
                         rc.interpret(rc.grad(m), batch, params, dtype="float64"))
    return _CACHE[dtype]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
def test_classifier_loss_and_grad(dtype, tol):
    (loss, grads), ref = classifier_case(dtype)
    assert close(loss, ref.loss, tol)
    assert set(grads) == set(ref.grads)
    for k, v in ref.grads.items():
        assert grads[k].dtype == np.dtype(dtype)
        assert close(grads[k], v, tol), k
    assert any(float(np.abs(v).max()) > 1e-3 for k, v in ref.grads.items() if "conv" in k.lower())


def test_parallel_kernels_run_from_run_and_the_module_reloads_in_a_new_process(tmp_path):
    """The parallel image kernels are called by the plain-Python ``run`` between stage functions (a cached
    jitted function calling a parallel one crashed when loaded from the cache, numba#8578): a second process
    loads the module and its stages from the first one's cache and gets the same loss, bit for bit. (The first
    process starts from the suite's compiled helpers, parallel image kernels included, as any run after the
    first does: the module is what it compiles.)"""
    classifier_case("float32")
    source = rc.compile(_CACHE["clf_model"], dtype="float32").kernel("grad").source
    stages, _, entry = source.partition("\ndef run(")
    # the training kernel's pools keep their argmax for the backward scatter; a forward kernel's do not
    assert "imk.conv2d_fwd(" in entry and "imk.maxpool_argmax(" in entry and "imk.maxpool_scatter(" in entry
    assert "imk.maxpool(" not in entry and "imk.maxpool_route(" not in entry
    forward = rc.compile(_CACHE["clf_model"], dtype="float32").kernel("loss").source.partition("\ndef run(")[2]
    assert "imk.maxpool(" in forward and "maxpool_argmax" not in forward
    assert not any(f"imk.{name}(" in stages for name in kernels_image.PARALLEL)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import numpy as np
        import rnnc as rc
        from image_cases import classifier
        m = classifier()
        rng = np.random.default_rng(3)
        x = (rng.random((3, 2, 8, 8)) * 4.0).astype("float32")
        params = {{k: v.astype("float32") for k, v in m.init_params(seed=1, dtype="float64").items()}}
        f = rc.compile(m, dtype="float32")
        loss, _ = f.loss_and_grad({{"x": x, "y": np.array([0, 2, 1])}}, params)
        print(repr(float(loss)), f.stats["grad"]["cache_hit"])
    """)
    env = dict(os.environ, RNNC_CACHE_DIR=str(with_helpers(tmp_path / "cache")))     # the module compiles cold
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    (first, cold), (second, hit) = (r.stdout.split() for r in runs)
    assert (cold, hit) == ("False", "True") and first == second


def test_blas_threads_default_to_one_beside_parallel_image_kernels():
    """A module whose run() calls parallel image kernels keeps BLAS at one thread in every stage by default
    (OpenBLAS's spinning threads against Numba's made the flagship's step 3.4x slower); threads= sets how many
    Numba threads its parallel pieces use."""
    classifier_case("float32")
    k = rc.compile(_CACHE["clf_model"], dtype="float32").kernel("grad")
    want = {"map": 1, "scan": 1, "kernel": 1}
    assert {key: v for key, v in k.blas_threads(128).items() if key in want} == want
    k.threads = 1
    assert {key: v for key, v in k.blas_threads(128).items() if key in want} == want
    assert k.blas_threads(128)["numba"] == 1
    from rnnc.runtime.kernel import IMAGE_ROW_PARTS  # row blocks: a fixed number whatever the threads
    assert k.blas_threads(128)["split"] == k.blas_threads(128)["blocks"] == IMAGE_ROW_PARTS
    k.threads = None
    assert k.blas_threads(128)["split"] == k.blas_threads(128)["blocks"] == IMAGE_ROW_PARTS


def _pool_reference(x, g, gx, k, s, p):
    """Max pooling, its first-maximum routing of ``g`` and selection from ``gx`` by brute force (np.argmax over
    each window, row-major: the first maximum)."""
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    out, route, sel = np.zeros(g.shape), np.zeros_like(x), np.zeros(g.shape)
    for n, c, u, v in np.ndindex(*g.shape):
        y0, x0 = max(0, sh * u - ph), max(0, sw * v - pw)
        win = x[n, c, y0:sh * u - ph + kh, x0:sw * v - pw + kw]
        by, bx = np.unravel_index(np.argmax(win), win.shape)
        out[n, c, u, v] = win.max()
        route[n, c, y0 + by, x0 + bx] += g[n, c, u, v]
        sel[n, c, u, v] = gx[n, c, y0 + by, x0 + bx]
    return out, route, sel


@pytest.mark.parametrize("k,s,p", [((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (0, 1)), ((3, 2), (3, 1), (1, 0))])
def test_pool_kernels_first_maximum_with_many_ties(k, s, p):
    """The shared max-pool kernels (branchless argmax, separable max) on data full of ties (values 0..2)."""
    from rnnc.backends.cpu import kernels_image as imk

    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(2, 3, 7, 6)).astype(np.float64)
    ho, wo = (7 + 2 * p[0] - k[0]) // s[0] + 1, (6 + 2 * p[1] - k[1]) // s[1] + 1
    g, gx = rng.standard_normal((2, 3, ho, wo)), rng.standard_normal(x.shape)
    out, route, sel = _pool_reference(x, g, gx, k, s, p)
    got = np.zeros_like(out)
    imk.maxpool(x, got, *k, *s, *p)
    assert np.array_equal(got, out)
    got = np.zeros_like(x)
    imk.maxpool_route(x, g, got, *k, *s, *p, False)
    assert np.allclose(got, route, rtol=0, atol=1e-12) and np.abs(route).max() > 0
    got = np.zeros_like(out)
    imk.maxpool_route(x, gx, got, *k, *s, *p, True)
    assert np.array_equal(got, sel)
    # the forward pool that keeps each window's argmax, and the scatter / selection from it
    got, idx = np.zeros_like(out), np.full(out.shape, -7, dtype=np.int64)
    imk.maxpool_argmax(x, got, idx, *k, *s, *p)
    assert np.array_equal(got, out)
    got = np.full_like(x, np.nan)
    imk.maxpool_scatter(idx, g, got, False)
    assert np.allclose(got, route, rtol=0, atol=1e-12)
    got = np.full_like(out, np.nan)
    imk.maxpool_scatter(idx, gx, got, True)
    assert np.array_equal(got, sel)


def test_channel_mean_kernel():
    from rnnc.backends.cpu import kernels_image as imk

    x = np.random.default_rng(5).standard_normal((3, 4, 13)).astype(np.float32)
    got = np.zeros(4, np.float32)
    imk.channel_mean(x, got)
    assert np.allclose(got, x.astype(np.float64).mean(axis=(0, 2)), rtol=0, atol=1e-6)


def test_compiled_training_engine_gives_outputs_loss_and_grads_in_one_call():
    """rnnc.train's CompiledEngine: one kernel for loss, gradients and outputs (batch statistics, probs), equal to
    the interpreter engine's."""
    from rnnc.train.engine import CompiledEngine, InterpretEngine

    m = _CACHE.setdefault("clf_model", classifier())
    rng = np.random.default_rng(6)
    batch = {"x": rng.random((3, 2, 8, 8)) * 4.0, "y": np.array([1, 0, 2])}
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in m.init_params(seed=2, dtype="float64").items()}
    got = CompiledEngine(m, "float64", threads=1).loss_and_grad(batch, params)
    ref = InterpretEngine(m, "float64").loss_and_grad(batch, params)
    assert close(got.loss, ref.loss, 1e-10)
    assert set(got.grads) == set(ref.grads) and set(got.outputs) == set(ref.outputs) and ref.outputs
    for k in ref.grads:
        assert close(got.grads[k], ref.grads[k], 1e-10), k
    for k in ref.outputs:
        assert close(got.outputs[k], ref.outputs[k], 1e-10), k


def _im2col_reference(x, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw):
    """``cols[c, a, b, n, u, v]`` by brute force (zero where the window position is out of range)."""
    n_, c_, h, w = x.shape
    out = np.zeros((c_, kh, kw, n_, ho, wo))
    for a, b, u, v in np.ndindex(kh, kw, ho, wo):
        y, xx = sh * u + dh * a - ph, sw * v + dw * b - pw
        if 0 <= y < h and 0 <= xx < w:
            out[:, a, b, :, u, v] = x[:, :, y, xx].T
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 3),
       st.integers(1, 3), st.integers(1, 2), st.integers(1, 2), st.integers(0, 2), st.integers(0, 2),
       st.integers(1, 2), st.integers(1, 2))
def test_im2col_and_col2im_match_brute_force(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw):
    """im2col (its one-run path for stride 1 at equal widths, and the row-by-row path) equals the brute-force
    gather and overwrites stale columns; col2im is its adjoint: <im2col(x), C> = <x, col2im(C)>."""
    from rnnc.backends.cpu import kernels_image as imk
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    assume(ho >= 1 and wo >= 1)
    rng = np.random.default_rng(n * 1000 + h * 10 + w)
    x = rng.standard_normal((n, c, h, w))
    want = _im2col_reference(x, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw)
    # the runtime reuses column buffers: only out-of-range positions written by an earlier call are zero, so
    # start from the layout an earlier call leaves (zeros where out of range) plus stale in-range values
    cols = np.where(want != 0, 7.0, 0.0)
    imk.im2col(x, cols, sh, sw, ph, pw, dh, dw)
    np.testing.assert_array_equal(cols, want)
    g = rng.standard_normal(want.shape)
    dx = rng.standard_normal(x.shape)                      # col2im zeroes it first
    imk.col2im(g.copy(), dx, sh, sw, ph, pw, dh, dw)
    assert np.isclose(np.sum(want * g), np.sum(x * dx), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("budget", [1, 40, 10 ** 6])
def test_blocked_conv_kernels_any_chunking(budget, threads):
    """The cache-blocked conv kernels give the same forward, input and weight gradients whatever the chunk size
    (one sample, a few, all) and the Numba thread count (chunks dealt to threads), with the weight gradient on
    the forward's columns or filling its own."""
    import numba

    from rnnc.backends.cpu import kernels_image as imk
    saved = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        _check_blocked_conv(imk, budget)
    finally:
        numba.set_num_threads(saved)


def _check_blocked_conv(imk, budget):

    rng = np.random.default_rng(7)
    n, c, h, w_, o = 5, 3, 7, 6, 4
    x, w = rng.standard_normal((n, c, h, w_)), rng.standard_normal((o, c, 3, 2))
    geo = (2, 1, 1, 2, 1, 2)                                   # stride, padding, dilation
    ho, wo = (h + 2 - 3) // 2 + 1, (w_ + 4 - 2 - 1) + 1
    k, p = c * 6, ho * wo
    cols = np.zeros((c, 3, 2, n, ho, wo))
    imk.im2col(x, cols, *geo)
    want_y = (w.reshape(o, k) @ cols.reshape(k, n * p)).reshape(o, n, ho, wo).transpose(1, 0, 2, 3)
    g = rng.standard_normal(want_y.shape)
    gmat = g.transpose(1, 0, 2, 3).reshape(o, n * p)
    want_dw = (gmat @ cols.reshape(k, n * p).T).reshape(w.shape)
    want_dx = np.zeros_like(x)
    imk.col2im((w.reshape(o, k).T @ gmat).reshape(c, 3, 2, n, ho, wo), want_dx, *geo)
    flat, gm, y = np.zeros(k * n * p), np.zeros(o * n * p), np.zeros(want_y.shape)  # C order, as generated code passes
    imk.conv2d_fwd(x, w, flat, gm.copy(), y, *geo, budget)
    assert np.allclose(y, want_y, rtol=0, atol=1e-12)
    for fill, cc in ((False, flat), (True, np.zeros_like(flat))):
        dw = np.zeros_like(w)
        imk.conv2d_wgrad(g, x, cc, fill, gm, dw, *geo, budget)
        assert np.allclose(dw, want_dw, rtol=0, atol=1e-12) and np.array_equal(cc, flat)
    dx = np.zeros_like(x)
    imk.conv2d_igrad(g, w, gm, np.zeros(k * n * p), dx, *geo, budget)
    assert np.allclose(dx, want_dx, rtol=0, atol=1e-12)
