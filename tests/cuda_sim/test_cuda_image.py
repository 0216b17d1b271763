"""CUDA image ops (rnnc/backends/cuda/ops_image.py) against the reference interpreter, in the simulator:

* every image op and its gradient ops applied directly (the CPU suite's model: odd strides, padding and
  dilation, a tie in a pooling window, a convolution inside a scan, broadcast reads), under both scan
  strategies, float64 to 1e-10;
* a small conv + BN + pool + SpatialRNN + global-pool classifier's loss and gradients (float64 to 1e-10,
  float32 to 1e-4);
* the flagship itself (examples/reseg_classifier.py ``build_model``, every layer of the seed) and its CNN-1
  baseline, tiny: 1 x 8 x 8 inputs, widths 2, forward and ``loss_and_grad`` to 1e-10.

Small on purpose: the simulator runs a Python thread per CUDA thread. The flagship at 8 x 8 reaches its
SpatialRNNs as a 1 x 1 map, so they run with ``pad=True`` (one 2 x 2 patch); the recurrence across grid cells
is covered by the small classifier (a 2 x 2 grid) and by the ReNet zoo model.
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from compiled_check import assert_matches_interpreter, close
from image_cases import IMAGE_OPS, bn_data, bn_model, classifier, ops_data, ops_model
from paths import EXAMPLES

import rnnc as rc
import rnnc.nn as nn
from rnnc.backends.cuda.ops import REUSED, TEMPLATES, missing_templates
from rnnc.runtime.targets import compile as rc_compile

sys.path.insert(0, str(EXAMPLES))
import reseg_classifier as R  # noqa: E402

_CACHE: dict = {}


def _host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else np.asarray(x)


def test_every_op_has_a_vetted_cuda_template():
    from rnnc.backends.cpu.ops import TEMPLATES as CPU

    assert missing_templates() == []
    for op in IMAGE_OPS:
        assert op in TEMPLATES
    for op in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad", "maxpool2d_grad", "avgpool2d_grad",
               "channel_mean", "bn_stats", "bn_sums"):   # the CPU forms call BLAS / scatter-add: never inherited
        assert op not in REUSED and TEMPLATES[op] is not CPU[op]


def _ops(scan: str):
    if scan not in _CACHE:
        m = _CACHE.setdefault("ops_model", ops_model())
        ins, ps = ops_data(m)
        f = rc_compile(m, target="cuda", dtype="float64", scan=scan, results="host")
        out = f.forward(ins, ps).outputs
        _CACHE[scan] = (out, rc.interpret(m, ins, ps, dtype="float64").outputs, f.stats["outputs"])
    return _CACHE[scan]


@pytest.mark.parametrize("scan", ["loop", "persistent", "grid"])
@pytest.mark.parametrize("name", IMAGE_OPS + ["scan_conv", "scan_input_grad", "scan_weight_grad",
                                              "bcast_weight_grad", "bcast_maxpool_grad"])
def test_image_op_cuda_equals_interpreter(name, scan):
    out, ref, stats = _ops(scan)
    assert stats["scan_strategy"] == [scan]
    assert close(out[name], ref[name], 1e-10), name
    assert float(np.abs(ref[name]).max()) > 0


def _grads(m, batch, params, dtype):
    f = rc_compile(m, target="cuda", dtype=dtype)
    cast = {k: np.asarray(v, dtype) for k, v in params.items()}
    data = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in batch.items()}
    return f, f.loss_and_grad(data, cast, to_host=True), rc.interpret(rc.grad(m), batch, params, dtype="float64")


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
def test_small_classifier_loss_and_grad(dtype, tol):
    m = _CACHE.setdefault("clf", classifier())
    rng = np.random.default_rng(3)
    batch = {"x": rng.random((3, 2, 8, 8)) * 4.0, "y": np.array([0, 2, 1])}
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in m.init_params(seed=1, dtype="float64").items()}
    _, (loss, grads), ref = _grads(m, batch, params, dtype)
    assert close(loss, ref.loss, tol)
    assert set(grads) == set(ref.grads)
    for k, v in ref.grads.items():
        assert grads[k].dtype == np.dtype(dtype)
        assert close(grads[k], v, tol), k
    assert any(float(np.abs(v).max()) > 1e-3 for k, v in ref.grads.items() if "rnn" in k and k.endswith("U"))


@pytest.mark.parametrize("loop_axis,affine", [(False, True), (True, False)])
def test_batch_norm_ops_cuda_equal_interpreter(loop_axis, affine):
    """bn_stats, batch_norm and its two backward ops (per-channel sums in two stages), float64 to 1e-10."""
    m = bn_model(loop_axis, affine)
    ins, ps = bn_data(loop_axis, seed=5, batch=2, steps=2)
    ps = ps if affine else {}
    f = rc_compile(m, target="cuda", dtype="float64", wrt=["x"] + sorted(ps))
    assert_matches_interpreter(f, m, ins, ps, 1e-10, call={"to_host": True}, wrt=["x"] + sorted(ps))


def _tiny(which: str):
    if which == "reseg":
        clf = R.build_model((1, 8, 8), 3, (2, 2, 2, 2), (2, 2), divisor=255.0, name="reseg_tiny")
        layers = tuple(dataclasses.replace(la, pad=True) if isinstance(la, nn.SpatialRNN) else la
                       for la in clf.layers)
        clf = dataclasses.replace(clf, layers=layers)
    else:
        clf = R.build_cnn1((1, 8, 8), 3, (2, 2), divisor=255.0, name="cnn1_tiny")
    return clf.build(train=True).model


@pytest.mark.parametrize("which", ["reseg", "cnn1"])
def test_flagship_tiny_forward_and_loss_and_grad(which):
    m = _tiny(which)
    rng = np.random.default_rng(0)
    batch = {"x": rng.uniform(0, 255, (3, 1, 8, 8)), "y": np.array([0, 2, 1])}
    params = m.init_params(seed=1, dtype="float64")
    f, _, gref = _grads(m, batch, params, "float64")
    assert_matches_interpreter(f, m, batch, params, 1e-10, call={"to_host": True})
    big = [k for k, v in gref.grads.items() if float(np.abs(v).max()) > 1e-3]
    assert any(k.startswith("conv1") for k in big)        # gradients reach the first layer
    ops = {n.op for n in f.kernel("grad")._graph.nodes}
    want = {"conv2d", "conv2d_input_grad", "conv2d_weight_grad", "maxpool2d", "maxpool2d_grad"}
    if which == "reseg":
        want |= {"bn_stats", "batch_norm", "bn_sums", "bn_input_grad", "to_grid", "from_grid", "avgpool2d",
                 "avgpool2d_grad"}
    assert want <= ops
