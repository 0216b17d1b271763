"""Batch-normalisation ops (rnnc/ops/batchnorm.py): the numpy meaning equals the textbook formula; gradients
equal finite differences (float64); the compiled CPU kernels and their plain-loop fallback equal the
interpreter (with and without a loop axis, with and without gamma/beta); the one-pass statistics survive a
mean far from zero; results do not depend on the thread count; misuse is refused with a clear error."""
from __future__ import annotations

import os

import numpy as np
import pytest
from paths import CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

import numba  # noqa: E402
from compiled_check import assert_grads_match, assert_matches_interpreter  # noqa: E402
from gradcheck import verify_grad  # noqa: E402
from image_cases import SHAPE  # noqa: E402
from image_cases import bn_data as data  # noqa: E402
from image_cases import bn_model as model  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc.backends.cpu import kernels_image as imk  # noqa: E402
from rnnc.backends.cpu import ops_batchnorm  # noqa: E402
from rnnc.errors import GraphError, ShapeError  # noqa: E402
from rnnc.ops import OPS, batch_norm, bn_stats  # noqa: E402


def textbook(x: np.ndarray, gamma=None, beta=None, eps=1e-5) -> np.ndarray:
    red = tuple(k for k in range(x.ndim) if k != x.ndim - 3)
    mu, var = x.mean(axis=red, keepdims=True), x.var(axis=red, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma[:, None, None] + beta[:, None, None]
    return y


@pytest.mark.parametrize("loop_axis", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_meaning_is_the_textbook_formula(loop_axis, affine):
    ins, ps = data(loop_axis)
    res = rc.interpret(model(loop_axis, affine), ins, ps if affine else {}, dtype="float64")
    x = ins["x"]
    red = tuple(k for k in range(x.ndim) if k != x.ndim - 3)
    assert np.allclose(res.outputs["stats"], np.concatenate([x.mean(axis=red), x.var(axis=red)]), atol=1e-12)
    want = textbook(x, ps["gamma"], ps["beta"]) if affine else textbook(x)
    assert np.allclose(res.outputs["y"], want, atol=1e-12)


def _loss(m, ins, ps):
    return rc.interpret(m, ins, ps, dtype="float64").loss


@pytest.mark.parametrize("loop_axis", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_gradients_equal_finite_differences(loop_axis, affine):
    """x's adjoint is the total derivative through the batch statistics; gamma and beta's are sums."""
    m = model(loop_axis, affine)
    ins, ps = data(loop_axis, seed=1)
    ps = ps if affine else {}
    res = rc.interpret(rc.grad(m, wrt=["x"] + sorted(ps)), ins, ps, dtype="float64")
    names = ["x"] + sorted(ps)
    verify_grad(lambda _: _loss(m, ins, ps), {"x": ins["x"], **ps}, res.grads, names, picks=8,
                rng=np.random.default_rng(2))
    assert float(np.abs(res.grads["x"]).max()) > 1e-3


def test_bn_stats_vjp_equals_finite_differences():
    """``bn_stats`` alone (its statistics in the loss) has its own VJP."""
    m = rc.Model("bn_stats_loss")
    x = m.input("x", SHAPE, axes=())
    s = bn_stats(x)
    m.loss(rc.fsum(s * s * m.param("p", (2 * SHAPE[0],))))
    ins = {"x": data(False, seed=4)[0]["x"]}
    ps = {"p": np.arange(1.0, 7.0)}
    g = rc.interpret(rc.grad(m, wrt=["x"]), ins, ps, dtype="float64").grads["x"]
    verify_grad(lambda _: _loss(m, ins, ps), {"x": ins["x"]}, {"x": g}, entries=(0, 7, 31, 59, 100, 150))


@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("loop_axis,affine,dtype,tol", [(False, True, "float64", 1e-10), (True, True, "float64", 1e-10),
                                                       (True, False, "float32", 1e-4)])
def test_compiled_equals_interpreter(loop_axis, affine, dtype, tol, fallback, monkeypatch, tmp_path):
    """The kernels (``(N, C, R)`` views) and the plain loop nests used when a value is no such view."""
    if fallback:        # its own kernel cache: the cache key cannot see the patch, it would find the kernel path
        monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path))
        monkeypatch.setattr(ops_batchnorm, "_views", lambda r, lead, nodes: None)
    m = model(loop_axis, affine)
    ins, ps = data(loop_axis, seed=5)
    ps = ps if affine else {}
    f = rc.compile(m, dtype=dtype, wrt=["x"] + sorted(ps))
    calls = [n for n in ("bn_stats", "bn_apply", "bn_sums", "bn_input_grad")
             if f"imk.{n}(" in f.kernel("grad").source]
    assert calls == ([] if fallback else ["bn_stats", "bn_apply", "bn_sums", "bn_input_grad"])
    # outputs entry by entry (tol + tol |y|), the loss and gradients relative to their scale
    assert_matches_interpreter(f, m, ins, ps, tol, atol=tol, grad_tol=tol, wrt=["x"] + sorted(ps))


def test_one_pass_statistics_keep_the_variance_under_a_large_mean():
    """float32 maps around 1000 with spread 0.01: the shifted float64 sums keep 5 digits of the variance."""
    rng = np.random.default_rng(6)
    x = (1000.0 + 0.01 * rng.standard_normal((64, 3, 50))).astype(np.float32)
    out = np.empty(6, np.float32)
    imk.bn_stats(x, out)
    x64 = x.astype(np.float64)
    assert np.allclose(out[:3], x64.mean(axis=(0, 2)), rtol=1e-7)
    assert np.allclose(out[3:], x64.var(axis=(0, 2)), rtol=1e-5)


def test_kernels_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((33, 5, 17)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = rng.random(5).astype(np.float32), rng.random(5).astype(np.float32)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            s, y = np.empty(10, np.float32), np.empty_like(x)
            sums, dx = np.empty(10, np.float32), np.empty_like(x)
            imk.bn_stats(x, s)
            imk.bn_apply(x, s, gamma, beta, True, 1e-5, y)
            imk.bn_sums(g, x, s, 1e-5, sums)
            imk.bn_input_grad(g, x, s, sums, gamma, True, 1e-5, dx)
            results.append((s, y, sums, dx))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_misuse_is_refused():
    m = rc.Model("bn_bad")
    x, z = m.input("x", SHAPE), m.input("z", SHAPE)
    gamma, beta = m.param("gamma", (3,)), m.param("beta", (3,))
    with pytest.raises(GraphError, match=r"bn_stats\(x\) of the same value.* at .*test_batchnorm.py:\d+"):
        batch_norm(x, bn_stats(z))
    with pytest.raises(GraphError, match=r"both gamma and beta.*test_batchnorm.py:\d+"):
        batch_norm(x, bn_stats(x), gamma)
    with pytest.raises(ShapeError, match=r"shape \(3,\)"):
        batch_norm(x, bn_stats(x), m.param("g4", (4,)), beta)
    with pytest.raises(ShapeError, match="needs a channel dimension"):
        bn_stats(m.input("s", ()))
    y = batch_norm(x, bn_stats(x), gamma, beta)
    (dx, *_rest) = OPS["batch_norm"].vjp(y, y)
    with pytest.raises(GraphError, match="second derivatives of batch_norm"):
        OPS["bn_input_grad"].vjp(dx, dx)


def test_vector_batch_norm_compiled_equals_interpreter():
    """Batch norm of a vector ``(C,)`` (after a dense layer): one value per channel per sample."""
    m = rc.Model("bn_vec")
    x, w = m.input("x", (5,), axes=()), m.input("w", (5,), axes=())
    y = batch_norm(x, bn_stats(x), m.param("gamma", (5,)), m.param("beta", (5,)))
    m.loss(rc.mean(w * y * y))
    rng = np.random.default_rng(8)
    ins = {"x": 3.0 + rng.standard_normal((7, 5)), "w": rng.random((7, 5))}
    ps = {"gamma": 1.0 + rng.random(5), "beta": rng.standard_normal(5)}
    f = rc.compile(m, dtype="float64", wrt=["x", "beta", "gamma"])
    assert_grads_match(f, m, ins, ps, 1e-10, wrt=["x", "beta", "gamma"])
    ref = rc.interpret(rc.grad(m, wrt=["x", "beta", "gamma"]), ins, ps, dtype="float64")
    assert float(np.abs(ref.grads["x"]).max()) > 1e-3
