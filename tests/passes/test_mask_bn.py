"""mask_bn: a relu's mask applied by the batch-norm input gradient it multiplies (rnnc/passes/mask_bn.py)."""
from __future__ import annotations

import numpy as np
import pytest

import rnnc as rc
from rnnc import t
from rnnc.autodiff import grad
from rnnc.backends.cpu import kernels_image as imk
from rnnc.ops import batch_norm, bn_stats
from rnnc.ops.registry import make
from rnnc.passes import CPU_PIPELINE, mask_bn, prune, run_pipeline

SHAPE = (3, 4, 5)


def relu_bn(loop_axis: bool, affine: bool, name: str = "relu_bn") -> rc.Model:
    """``loss = mean(w * (batch_norm(relu(x * P)) + 1)^2)``: the gradient of ``P`` passes the relu's mask."""
    m = rc.Model(f"{name}_{int(loop_axis)}{int(affine)}")
    axes = (t,) if loop_axis else ()
    x, w = m.input("x", SHAPE, axes=axes), m.input("w", SHAPE, axes=axes)
    h = rc.relu(x * m.param("P", SHAPE))
    gb = (m.param("gamma", (SHAPE[0],)), m.param("beta", (SHAPE[0],))) if affine else ()
    y = batch_norm(h, bn_stats(h), *gb)
    m.loss(rc.mean(w * (y + 1.0) * (y + 1.0)))
    return m


def _data(m, loop_axis: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    lead = ((4,) if loop_axis else ()) + (3,)
    inputs = {"x": rng.standard_normal(lead + SHAPE), "w": rng.random(lead + SHAPE)}
    return inputs, m.init_params(seed, "float64")


def _masked(graph) -> int:
    return sum(1 for n in graph.nodes if n.op == "bn_input_grad" and n.attr("mask"))


@pytest.mark.parametrize("loop_axis,affine", [(False, True), (True, False)])
def test_the_mask_moves_into_the_gradient_and_nothing_changes(loop_axis, affine):
    m = relu_bn(loop_axis, affine)
    g = prune(grad(m).graph)
    fused = mask_bn(g)
    assert _masked(g) == 0 and _masked(fused) == 1
    assert not any(n.op == "positive" for n in fused.nodes)
    inputs, params = _data(m, loop_axis)
    a = rc.interpret(g, inputs, params, dtype="float64")
    b = rc.interpret(fused, inputs, params, dtype="float64")
    for name in a.grads:
        assert np.array_equal(a.grads[name], b.grads[name]), name          # the same products, to the bit
    # compiled (the kernel, or the loop nest inside a scan) against the interpreter of the model
    assert _masked(run_pipeline(g, CPU_PIPELINE)) == 1
    loss, grads = rc.compile(m, dtype="float64").loss_and_grad(inputs, params)
    assert abs(loss - a.loss) < 1e-12
    for name, v in a.grads.items():
        np.testing.assert_allclose(grads[name], v, rtol=1e-10, atol=1e-12)


def test_a_gradient_read_elsewhere_keeps_its_own_product():
    m = rc.Model("two_readers")
    x, g = m.input("x", SHAPE), m.input("g", SHAPE)
    s = bn_stats(x)
    sums = make("bn_sums", [g, x, s], eps=1e-5)
    d = make("bn_input_grad", [g, x, s, sums], eps=1e-5)
    m.output("masked", d * make("positive", [x]))
    m.output("plain", d)
    assert _masked(mask_bn(m.graph)) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_masked_kernel_is_the_kernel_times_the_mask_to_the_bit(dtype):
    rng = np.random.default_rng(3)
    n, c, r = 6, 5, 7
    g, x, z = (rng.standard_normal((n, c, r)).astype(dtype) for _ in range(3))
    z[0, 0, :3] = 0.0                                  # z = 0 passes nothing, as positive(0) = 0
    s = np.concatenate([x.mean((0, 2)), x.var((0, 2))]).astype(dtype)
    sums = rng.standard_normal(2 * c).astype(dtype)
    gamma = rng.standard_normal(c).astype(dtype)
    plain, masked = np.empty_like(g), np.empty_like(g)
    imk.bn_input_grad(g, x, s, sums, gamma, True, 1e-5, plain)
    imk.bn_input_grad_masked(g, x, s, sums, gamma, True, 1e-5, z, masked)
    want = plain * (z > 0).astype(dtype)
    assert np.array_equal(masked, want) and np.array_equal(np.signbit(masked), np.signbit(want))


def test_the_loop_nest_applies_the_mask_too(monkeypatch):
    """Where the map is no ``(N, C, R)`` view (or on CUDA's plain loops), ``input_grad_loops`` writes the masked
    gradient itself."""
    import time

    from rnnc.backends.cpu import ops_batchnorm

    monkeypatch.setattr(ops_batchnorm, "_views", lambda r, lead, nodes: None)
    m = relu_bn(False, True, name=f"relu_bn_loops_{time.time_ns()}")       # a module rendered now, with loops
    inputs, params = _data(m, False, seed=1)
    f = rc.compile(m, dtype="float64")
    loss, grads = f.loss_and_grad(inputs, params)
    assert "bn_input_grad" not in f.kernel("grad").source.split("def run(")[1]       # no kernel call in run()
    ref = rc.interpret(grad(m), inputs, params, dtype="float64")
    assert abs(loss - ref.loss) < 1e-12
    for name, v in ref.grads.items():
        np.testing.assert_allclose(grads[name], v, rtol=1e-10, atol=1e-12)
