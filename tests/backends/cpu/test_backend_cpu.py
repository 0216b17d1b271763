"""Compiled CPU kernels agree with the reference interpreter: outputs, loss and gradients, on every zoo
model (float64 to 1e-10, float32 to 1e-4 relative) and in streaming ``step`` (hypothesis-drawn models:
test_reuse.py, which compiles each once for both of its checks).

Numba compiles are slow, so each compiled model is built once per session (module-level cache) and the
generated modules go to one cache folder that later runs reuse (``RNNC_CACHE_DIR``, default below).
"""
from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest
from paths import CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

from compiled_check import (  # noqa: E402
    MERGE_ALL,
    ZOO_NAMES,
    assert_grads_match,
    assert_matches_interpreter,
    close,
    compiled,
)
from zoo import ZOO  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc import t  # noqa: E402
from rnnc.backends.cpu.ops import missing_templates  # noqa: E402
from rnnc.backends.cpu.render import MissingTemplate, Renderer, RenderOptions  # noqa: E402
from rnnc.passes import run_pipeline  # noqa: E402
from rnnc.runtime.compiled import Compiled  # noqa: E402

T, B = 4, 3


def _data(case, seed=0):
    inputs = case.make_inputs(np.random.default_rng(seed), T, B, np.float64)
    return inputs, case.params(seed=seed)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_forward_and_grad_float64(name):
    case, f = compiled(name, "float64")
    inputs, params = _data(case)
    assert_matches_interpreter(f, case.model, inputs, params, 1e-10)


# float32 on the two models that exercise every float32 code path of the others (gates with sigmoid/tanh,
# merged products, length masks); the float64 tests above cover every model's structure
@pytest.mark.parametrize("name", ["lstm", "variable_length"])
def test_zoo_float32(name):
    case, f = compiled(name, "float32")
    inputs, params = _data(case, seed=1)
    ref = rc.interpret(case.model, inputs, params, dtype="float64")
    out = f.forward(inputs, params)
    for k, v in ref.outputs.items():
        assert out.outputs[k].dtype == np.float32
        assert close(out.outputs[k], v, 1e-4), k
    assert_grads_match(f, case.model, inputs, params, 1e-4)


def test_outputs_without_targets_and_reuse_across_shapes():
    case, f = compiled("elman", "float64")
    inputs, params = _data(case)
    x_only = {k: v for k, v in inputs.items() if k != "y"}
    out = f.forward(x_only, params)
    assert out.loss is None
    ref = rc.interpret(case.model, x_only, params, dtype="float64")
    assert close(out.outputs["o"], ref.outputs["o"], 1e-10)
    longer = case.make_inputs(np.random.default_rng(5), 2 * T + 1, B + 2, np.float64)   # new sizes, same kernel
    ref2 = rc.interpret(case.model, longer, params, dtype="float64")
    assert close(f.forward(longer, params).loss, ref2.loss, 1e-10)


def test_autonomous_needs_sizes():
    case = ZOO["autonomous"]()
    f = rc.compile(case.model, dtype="float64")
    with pytest.raises(ValueError, match="size of axis 't' is unknown"):
        f.forward({}, case.params())


def test_same_input_errors_as_interpreter():
    case, f = compiled("elman", "float64")
    inputs, params = _data(case)
    bad = dict(inputs, x=inputs["x"][..., :2])
    with pytest.raises(ValueError) as ours:
        f.forward(bad, params)
    with pytest.raises(ValueError) as theirs:
        rc.interpret(case.model, bad, params)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="param 'W'"):
        f.loss_and_grad(inputs, {k: v for k, v in params.items() if k != "W"})


def test_step_matches_whole_sequence():
    case, f = compiled("two_tap", "float64")
    inputs, params = _data(case)
    full = f.forward(inputs, params)
    state, outs = None, []
    for k in range(T):
        o, state = f.step({"x": inputs["x"][k]}, state, params)
        outs.append(o)
    for name, v in full.outputs.items():
        assert close(np.stack([o[name] for o in outs]), v, 1e-10), name


def test_step_refuses_whole_axis_models():
    case, f = compiled("many_to_one", "float64")
    inputs, params = _data(case)
    with pytest.raises(rc.GraphError, match="whole axis"):
        f.step({"x": inputs["x"][0]}, None, params)


def test_source_is_readable_and_traceable():
    _, f = compiled("lstm", "float64")
    src = f.source
    assert "@numba.njit(cache=True" in src and "def run(" in src and "def stage_" in src
    lines = src.splitlines()
    # each value's code follows one comment naming it in the code's variables, with the user's file:line
    note = re.compile(r" +# [a-z]+\d+\w* = .+   zoo\.py:\d+  \S")
    for k, ln in enumerate(lines):
        if ln.startswith("def stage_"):
            first = next(x for x in lines[k + 1:] if not x.strip().startswith("# ----"))
            assert re.match(r" +# ", first), (ln, first)
    run_lines = src.split("def run(")[1].split("\nMETA = ")[0].splitlines()[1:]
    for k, ln in enumerate(run_lines):          # a product or kernel run() calls: its comment two lines up
        if ln.lstrip().startswith(("lak.", "imk.")):
            assert note.match(run_lines[k - 2]), run_lines[k - 2:k + 1]
    assert sum(bool(note.match(ln)) for ln in lines) >= 10
    grad_src = f.kernel("grad").source
    # stacked weight gradients are split by numpy in run(), not by compiled loops
    assert "take_rows(" in grad_src and "np.copyto(" in grad_src.split("def run(")[1]
    assert "for s_ in range(n0):" in src                    # a loop over time, not an unrolled body
    case, _ = compiled("lstm", "float64")
    f.forward(*_data(case))
    assert f.stats["loss"]["compile_s"] > 0


def test_blas_threads_per_stage_kind():
    """A module with split scans and row-blocked products runs them on Numba's threads with one BLAS thread
    everywhere; a module without parallel pieces uses 2 BLAS threads for map stages, and for a scan's
    per-step products 1 thread up to batch 32 and 2 above; ``threads=`` fixes every stage."""
    import numba

    _, f = compiled("elman", "float64")
    k = f.kernel("grad")
    n = numba.config.NUMBA_NUM_THREADS
    want = {"map": 1, "scan": 1, "kernel": 1, "split": min(n, 8), "blocks": n, "numba": n}
    assert k.blas_threads(32) == want
    assert k.blas_threads(3)["split"] == 1            # too few rows for two blocks
    k._parallel = False
    assert k.blas_threads(32) == {**want, "map": 2}
    assert k.blas_threads(64) == {**want, "map": 2, "scan": 2, "split": min(n, 16)}
    k._parallel = None
    one = rc.compile(ZOO["elman"]().model, threads=1).kernel("grad")
    assert one.blas_threads(64)["split"] == 1 and one.blas_threads(64)["blocks"] == 1
    one._parallel = False
    assert one.blas_threads(64)["map"] == 1


def test_compile_source_independent_of_length():
    case = ZOO["elman"]()
    f = rc.compile(case.model, dtype="float32")
    src = f.kernel("grad").source
    assert src.count("for s_ in range(n0)") == 2            # one forward scan, one reverse scan
    assert "gk.dot(" in src                                 # products are GEMMs (BLAS calls in panels)


def test_every_op_has_a_template_or_names_the_op():
    """Every registered op has a CPU template; an op without one is refused by the renderer, naming it."""
    assert missing_templates() == []
    from rnnc.ops import OPS
    from rnnc.ops.registry import make, register

    register("probe_no_template", lambda i, a: (i[0].shape, "float"), lambda n, x: x, None)
    try:
        m = rc.Model("m")
        x = m.input("x", 2)
        h = m.signal("h", 2)
        h[t] = rc.tanh(make("probe_no_template", [x[t]]) + h[t - 1])
        m.output("o", h[t])
        assert missing_templates() == ["probe_no_template"]
        with pytest.raises(MissingTemplate, match="'probe_no_template'"):
            Renderer(m.graph, "float64").render()
    finally:
        del OPS["probe_no_template"]


@pytest.mark.parametrize("opts", [dict(truncate=(2, 3)), dict(checkpoint=2), dict(wrt=["W"])])
def test_grad_options(opts):
    case = ZOO["elman"]()
    inputs = case.make_inputs(np.random.default_rng(0), 7, 2, np.float64)
    params = case.params()
    # checkpoint= runs by segments (rnnc.runtime.segments) and really saves memory: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = rc.compile(case.model, dtype="float64", **opts)
    assert (f.segments is not None) == ("checkpoint" in opts)
    assert_grads_match(f, case.model, inputs, params, 1e-10, **opts)


def test_float32_tanh_sigmoid_accuracy_over_the_whole_range():
    """float32 kernels use vectorisable rational tanh / sigmoid (no libm call): absolute error < 5e-7
    everywhere, exact limits far out, odd symmetry."""
    m = rc.Model("acts")
    x = m.input("x", 8)
    m.output("th", rc.tanh(x[t]))
    m.output("sg", rc.sigmoid(x[t]))
    xs = np.concatenate([np.linspace(-30, 30, 4001), [-1e30, -88.0, -1e-30, 0.0, 1e-30, 88.0, 1e30]])
    xs = np.resize(xs, (len(xs) + 7) // 8 * 8).astype(np.float32)
    out = rc.compile(m, dtype="float32").forward({"x": xs.reshape(-1, 1, 8)}, {}).outputs
    th, sg = out["th"].reshape(-1).astype(np.float64), out["sg"].reshape(-1).astype(np.float64)
    x64 = xs.astype(np.float64)
    assert np.abs(th - np.tanh(x64)).max() < 5e-7
    assert np.abs(sg - 0.5 * (1 + np.tanh(x64 / 2))).max() < 5e-7
    assert np.all(np.abs(th) <= 1) and np.all((sg >= 0) & (sg <= 1))
    assert np.all(th[x64 >= 10] == 1.0) and np.all(th[x64 <= -10] == -1.0)
    order = np.argsort(x64)
    assert np.all(np.diff(th[order]) >= -5e-7)            # monotone up to its error bound


def test_merged_product_slice_read_after_its_scan():
    """Two products of h[t-1] are merged into one per-step GEMM whose result is a one-step buffer; a gate slice
    that a later map stage reads must get its own full buffer, not a view of that step buffer."""
    m = rc.Model("slice_after_scan")
    x = m.input("x", 3)
    A, C = m.param("A", (3, 3)), m.param("C", (3, 3))
    h = m.signal("h", 3)
    hp = h[t - 1]
    gate = C @ hp
    h[t] = rc.tanh(A @ hp + gate * 0.5 + x[t])
    m.output("o", rc.sigmoid(gate) * 2.0)
    inputs = {"x": np.random.default_rng(0).normal(size=(T, B, 3))}
    params = m.init_params(0, "float64")
    ref = rc.interpret(m, inputs, params)
    out = Compiled(m, dtype="float64", passes=MERGE_ALL).forward(inputs, params)   # merge the 3-row products
    assert close(out.outputs["o"], ref.outputs["o"], 1e-10)


@pytest.mark.parametrize("name", ["lstm", "gru", "renet"])
def test_every_merge_compiled(name):
    """With the scan-size threshold off, the zoo's small recurrent products are merged per step, sums of
    products become one product on stacked adjoints that the LSTM's gates write in place (no concat copy), and
    weight gradients are one product per shared operand: still equal to the interpreter."""
    case = ZOO[name]()
    inputs, params = _data(case)
    ref = rc.interpret(rc.grad(case.model), inputs, params)
    f = Compiled(case.model, dtype="float64", passes=MERGE_ALL)
    loss, grads = f.loss_and_grad(inputs, params)
    assert abs(loss - ref.loss) <= 1e-10 * max(1.0, abs(ref.loss))
    for k, v in ref.grads.items():
        assert close(grads[k], v, 1e-10), k
    r = Renderer(run_pipeline(rc.grad(case.model).graph, MERGE_ALL), "float64",
                 options=RenderOptions(alias_slices=True, numpy_prologue=True, vector_math=True))
    r.render()
    if name == "lstm":
        assert r.placed, "the stacked gate adjoints should be written in place"



def test_values_computed_in_a_stage_are_not_read_before_it():
    """The gradient of ``(2 A) @ x[t]`` holds ``transpose(2 A)``: axis-free like a parameter reshuffle, but its
    input is computed by a stage, so it must not run in ``run()``'s prologue, before that stage. Checked on
    the source (the prologue reads only params and earlier prologue results) and on values (twice, with new
    parameters, so a stale buffer from the first call would show)."""
    import re

    m = rc.Model("scaled_weights")
    x, y = m.input("x", 3), m.input("y", 3)
    A, W = m.param("A", (3, 3)), m.param("W", (3, 3))
    h = m.signal("h", 3)
    h[t] = rc.tanh((A * 2.0) @ x[t] + W @ h[t - 1])
    m.output("o", h[t])
    m.loss(rc.mse(h[t], y[t]))
    f = rc.compile(m, dtype="float64", wrt=["A", "W", "x"])
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(T, B, 3)), "y": rng.normal(size=(T, B, 3))}
    for seed in (0, 1):
        params = m.init_params(seed, "float64")
        ref = rc.interpret(rc.grad(m, wrt=["A", "W", "x"]), inputs, params)
        loss, grads = f.loss_and_grad(inputs, params)
        assert abs(loss - ref.loss) <= 1e-10 * max(1.0, abs(ref.loss))
        for k, v in ref.grads.items():
            assert close(grads[k], v, 1e-10), (seed, k)
    run = f.kernel("grad").source.split("def run(")[1].split("_threads(")[0]
    ready = set()
    for line in run.splitlines()[1:]:
        code = line.split("  # ")[0]
        names = re.findall(r"\b[vp]\d+\b", code)
        if names:
            out, *reads = names
            assert all(n.startswith("p") or n in ready for n in reads), line
            ready.add(out)
    assert "transpose(v" in f.kernel("grad").source       # the case is there: a transpose of a computed value
