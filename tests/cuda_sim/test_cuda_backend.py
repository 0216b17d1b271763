"""``rc.compile(m, target="cuda")`` against the reference interpreter: forward and gradients of the zoo's
recurrent models, both scan strategies, device-array inputs, results on the device, ``step``, the tiled GEMM.

Small shapes on purpose: the simulator runs one Python thread per CUDA thread.
"""
from __future__ import annotations

import re
from contextlib import nullcontext

import numpy as np
import pytest
from compiled_check import assert_grads_match, assert_matches_interpreter
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import cuda
from random_models import build, inputs_for, params_for, specs
from zoo import ZOO

import rnnc as rc
from rnnc.backends.cuda.emit import free_names
from rnnc.backends.cuda.kernels import gemm
from rnnc.runtime.targets import compile as rc_compile

T, B = 3, 2


def _host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else np.asarray(x)


def _check(name: str, scan: str, dtype: str = "float64", tol: float = 1e-10) -> dict:
    case = ZOO[name]()
    inputs = case.make_inputs(np.random.default_rng(1), T, B, np.float64)
    params = case.params(seed=2)
    f = rc_compile(case.model, target="cuda", dtype=dtype, scan=scan)
    assert_matches_interpreter(f, case.model, inputs, params, tol, atol=tol, call={"to_host": True})
    return f.stats


@pytest.mark.parametrize("name", ["elman", "lstm", "gru", "bidirectional", "renet"])
@pytest.mark.parametrize("scan", ["loop", "persistent"])
def test_zoo_matches_interpreter(name, scan):
    stats = _check(name, scan)
    assert stats["grad"]["scan_strategy"] and set(stats["grad"]["scan_strategy"]) == {scan}


@pytest.mark.parametrize("name", ["lstm", "bidirectional", "renet"])
def test_grid_strategy_matches_interpreter(name):
    """The cooperative multi-block scan (the simulator runs cooperative grids of one block only, so this
    checks the generated grid-stride loops and ``grid.sync()`` barriers, not cross-block timing)."""
    stats = _check(name, "grid")
    assert set(stats["grad"]["scan_strategy"]) == {"grid"}


@pytest.mark.parametrize("budget", [0, 1 << 20])
def test_persistent_matrices_transposed_in_global_or_shared_memory(monkeypatch, budget):
    """Products inside a persistent kernel read ``A^T``: a global copy when the shared budget is spent
    (patched to 0: the H = 1024 case), a shared-memory copy when it fits."""
    import rnnc.backends.cuda.render as render

    monkeypatch.setattr(render, "SHARED_BYTES", budget)
    stats = _check("lstm", "persistent")
    assert set(stats["grad"]["scan_strategy"]) == {"persistent"}
    src = rc_compile(ZOO["lstm"]().model, target="cuda", scan="persistent").kernel("grad").source
    kernel = src.split("def run")[0]
    assert ("cuda.shared.array" in kernel) == bool(budget)
    assert any(f"tr{k}" in kernel for k in range(200)) != bool(budget)


def test_auto_strategy_thresholds(monkeypatch):
    """auto: one block while the step's product work is small; past it, the grid for small batches, the
    per-step loop for large ones (thresholds patched so that tiny models cross them)."""
    import rnnc.backends.cuda.render as render

    m = ZOO["elman"]().model
    inputs = ZOO["elman"]().make_inputs(np.random.default_rng(0), T, B, np.float64)
    params = ZOO["elman"]().params()
    picked = {}
    for macs, batch in [(1 << 20, 64), (0, 64), (0, 0)]:
        monkeypatch.setattr(render, "PERSISTENT_MACS", macs)
        monkeypatch.setattr(render, "GRID_MAX_BATCH", batch)
        f = rc_compile(m, target="cuda", dtype="float64")
        f.forward(inputs, params)
        picked[(macs, batch)] = set(f.stats["loss"]["scan_strategy"])
    assert picked == {(1 << 20, 64): {"persistent"}, (0, 64): {"grid"}, (0, 0): {"loop"}}


@pytest.mark.parametrize("name", ["ops_mix", "variable_length", "stack2", "encoder_decoder"])
def test_more_models_auto_strategy(name):
    stats = _check(name, "auto")
    assert set(stats["grad"]["scan_strategy"]) == {"persistent"}      # tiny steps: one block per scan


def test_float32_within_1e4():
    _check("lstm", "auto", dtype="float32", tol=1e-4)


def test_device_inputs_and_results():
    case = ZOO["elman"]()
    inputs = case.make_inputs(np.random.default_rng(0), T, B, np.float32)
    params = case.params()
    f = rc_compile(case.model, target="cuda")
    dev_params = f.to_device(params)
    dev_inputs = {k: cuda.to_device(v) for k, v in inputs.items()}
    out = f.forward(dev_inputs, dev_params)
    assert not isinstance(out.outputs["o"], np.ndarray) and hasattr(out.outputs["o"], "copy_to_host")
    host = rc_compile(case.model, target="cuda", results="host").forward(inputs, params)
    assert isinstance(host.outputs["o"], np.ndarray)
    np.testing.assert_allclose(out.outputs["o"].copy_to_host(), host.outputs["o"], rtol=1e-6, atol=1e-6)
    ref = rc.interpret(case.model, inputs, params, dtype="float32")
    np.testing.assert_allclose(host.outputs["o"], ref.outputs["o"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="input 'x'"):
        f.forward({**dev_inputs, "x": cuda.to_device(np.zeros((T, B, 7), np.float32))}, dev_params)


def test_results_are_not_overwritten_by_the_next_call():
    case = ZOO["elman"]()
    rng = np.random.default_rng(0)
    params = case.params()
    f = rc_compile(case.model, target="cuda", dtype="float64")
    first = f.forward(case.make_inputs(rng, T, B, np.float64), params).outputs["o"]
    kept = first.copy_to_host()
    f.forward(case.make_inputs(rng, T, B, np.float64), params)
    np.testing.assert_array_equal(first.copy_to_host(), kept)


def test_step_matches_forward():
    case = ZOO["lstm"]()
    inputs = case.make_inputs(np.random.default_rng(3), T, B, np.float64)
    params = case.params()
    f = rc_compile(case.model, target="cuda", dtype="float64", results="host")
    full = f.forward({"x": inputs["x"]}, params).outputs
    state = None
    for k in range(T):
        outs, state = f.step({"x": inputs["x"][k]}, state, params)
        for name, v in outs.items():
            np.testing.assert_allclose(v, full[name][k], rtol=1e-10, atol=1e-12)


def test_source_is_cuda_and_traceable():
    f = rc_compile(ZOO["lstm"]().model, target="cuda")
    src = f.kernel("grad").source
    assert "@cuda.jit" in src and "lib.gemm(" in src and "cuda.shared.array" in src
    assert "picked_.append('persistent')" in src and "picked_.append('loop')" in src
    assert "= tanh(" in src and "  # v" in src    # lines name their IR node (op and operands)
    # ... in the code's variables, with the user's file:line and line (added when the source is read)
    assert re.search(r"\n +# [a-z]+\d+\w* = .+   zoo\.py:\d+  \S", src)
    assert re.search(r"\bv\d+_h\b", src)                  # the LSTM's state h spelled into its variable


@settings(max_examples=6, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.booleans(), st.booleans())
def test_tiled_gemm(m, n, k, ta, tb):
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a = rng.normal(size=(k, m) if ta else (m, k))
    b = rng.normal(size=(n, k) if tb else (k, n))
    c = cuda.to_device(np.zeros((m, n)))
    gemm(cuda.to_device(a), cuda.to_device(b), c, int(ta), int(tb))
    np.testing.assert_allclose(c.copy_to_host(), (a.T if ta else a) @ (b.T if tb else b), rtol=1e-12, atol=1e-12)


def test_free_names_are_kernel_arguments():
    body = ["    tid_ = cuda.grid(1)", "    acc = F(0.0)", "    for q in range(n0):", "        acc += v3[i0, q]",
            "    v4[tid_] = math.tanh(acc)"]
    assert free_names(body) == ["i0", "n0", "v3", "v4"]


def test_bad_target_and_options():
    m = ZOO["elman"]().model
    with pytest.raises(ValueError, match="scan must be"):
        rc_compile(m, target="cuda", scan="fast")
    with pytest.raises(ValueError, match="results must be"):
        rc_compile(m, target="cuda", results="gpu")


@settings(max_examples=4, deadline=None)
@given(specs(), st.sampled_from(["loop", "persistent", "grid"]))
def test_random_models_match_interpreter(s, scan):
    m = build(s)
    rng = np.random.default_rng(s["seed"])
    inputs, params = inputs_for(m, s, rng), params_for(m, rng)
    f = rc_compile(m, target="cuda", dtype="float64", scan=scan)
    assert_grads_match(f, m, inputs, params, 1e-9, atol=1e-11, loss_tol=1e-12, call={"to_host": True})


@pytest.mark.parametrize("opts", [dict(truncate=(2, 3)), dict(checkpoint=2), dict(wrt=["W"])])
def test_grad_options(opts):
    """Truncated BPTT (``tbptt_mask`` step constants), checkpointing and a subset of params, as on the CPU."""
    case = ZOO["elman"]()
    inputs = case.make_inputs(np.random.default_rng(0), 5, B, np.float64)
    params = case.params()
    with pytest.warns(RuntimeWarning, match="saves no memory") if "checkpoint" in opts else nullcontext():
        f = rc_compile(case.model, target="cuda", dtype="float64", **opts)
    assert_grads_match(f, case.model, inputs, params, 1e-10, atol=1e-12, loss_tol=1e-12, call={"to_host": True},
                       **opts)
    if "truncate" in opts:
        assert "tbptt_mask" in {n.op for n in f.kernel("grad")._graph.nodes}


def test_training_engine_on_cuda_gets_numpy_gradients():
    """The trainer's compiled engine on CUDA: loss, gradients and outputs as numpy arrays the numpy optimisers
    can use, equal to the interpreter's."""
    from rnnc.train.engine import CompiledEngine

    case = ZOO["elman"]()
    inputs = case.make_inputs(np.random.default_rng(1), T, B, np.float64)
    params = case.params(seed=2)
    step = CompiledEngine(case.model, dtype="float64", target="cuda").loss_and_grad(inputs, params)
    ref = rc.interpret(rc.grad(case.model), inputs, params)
    assert step.loss == pytest.approx(ref.loss, rel=1e-10)
    for k, v in ref.grads.items():
        assert isinstance(step.grads[k], np.ndarray)
        np.testing.assert_allclose(step.grads[k], v, rtol=1e-10, atol=1e-10)
    fwd = rc.interpret(case.model, inputs, params)
    for k, v in fwd.outputs.items():
        assert isinstance(step.outputs[k], np.ndarray)
        np.testing.assert_allclose(step.outputs[k], v, rtol=1e-10, atol=1e-10)
