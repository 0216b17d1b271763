"""Storage shared within a scan (rnnc/backends/cpu/inplace.py): gates written over the input products they are
computed from, gate adjoints written back over the gates once a step has read them. Gradients stay the
interpreter's (float64, from NaN-filled buffers too), and the kernels store what the module says."""
import os
import sys

import numpy as np
import pytest
from compiled_check import close
from paths import BENCHMARKS, CACHE_DIR
from zoo import ZOO

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)
sys.path.insert(0, str(BENCHMARKS))

from bptt_memory import lstm  # noqa: E402  (the LSTM whose memory docs/benchmarks.md reports)

import rnnc as rc  # noqa: E402
from rnnc import t  # noqa: E402
from rnnc.backends.cpu.render import Renderer  # noqa: E402
from rnnc.backends.cpu.rendered import KERNEL  # noqa: E402

H, C = 16, 2


def per_step_floats(kernel) -> int:
    """Floats per step and sample of the kernel's own buffers along its loop axis (views excluded)."""
    return sum(int(np.prod(b.shape, dtype=np.int64)) for b in kernel.layout.buffers
               if not b.view and b.dims and b.dims[0] in kernel.source_graph.axes())


def renderer(kernel) -> Renderer:
    r = Renderer(kernel.graph, str(kernel.dtype), options=KERNEL)
    r.render()
    return r


def poisoned(f, inputs, params, **kw):
    """``loss_and_grad`` once, then again from work buffers filled with NaN: nothing may read a row of shared
    storage before the call writes it."""
    first = f.loss_and_grad(inputs, params, **kw)
    for k in f._kernels.values():
        for bufs in k._buffers.values():
            for arr in bufs.values():
                arr.fill(np.nan if arr.dtype.kind == "f" else 1)
    again = f.loss_and_grad(inputs, params, **kw)
    assert first[0] == again[0] and all(np.array_equal(first[1][n], again[1][n]) for n in first[1])
    return again


def test_lstm_segment_kernel_stores_six_hidden_arrays_per_step():
    """The benchmark's LSTM: per step one array of 4 H for the input products, then the gates, then the gates'
    adjoints; h and c (2 H); the one-hot labels, logits and softmax (3 C) and two per-sample scalars. Before:
    the four gates in arrays of their own, 10 H."""
    m = lstm(4, H, C)
    f = rc.compile(m, dtype="float64", checkpoint=3)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(7, 2, 4)), "y": rng.integers(0, C, size=(7, 2))}
    params = m.init_params(seed=0, dtype="float64")
    f.loss_and_grad(inputs, params)
    k = f.segments.kernel("segment_grad")
    assert per_step_floats(k) == 6 * H + 3 * C + 2, per_step_floats(k)
    r = renderer(k)
    (products,) = r.in_place - r.aliases                     # U x[t] for the four gates, (t, B, 4H)
    gates = [n for n, b in r.bufs.items() if b.var == r.bufs[products].var and n is not products]
    assert sorted(r.bufs[g].offset for g in gates) == [0, H, 2 * H, 3 * H]
    views = {b.var: b.view for b in k.layout.buffers if b.view}
    assert (r.bufs[products].var, 0) in views.values()       # the stacked adjoints: a view of the same storage
    assert "written back" in k.source


@pytest.mark.parametrize("name", ["lstm", "gru", "elman"])
@pytest.mark.parametrize("steps, every", [(7, 3), (8, 5), (9, 2), (6, None)])
def test_gradients_equal_the_interpreters(name, steps, every):
    """Zoo cells, whole-sequence kernels and checkpoint segments (T not a multiple of k): loss and gradients
    equal the interpreter's in float64, also from NaN-filled buffers."""
    case = ZOO[name]()
    f = rc.compile(case.model, dtype="float64", **({"checkpoint": every} if every else {}))
    B = 3
    inputs = case.make_inputs(np.random.default_rng(steps), steps, B, np.float64)
    params = case.params(every or 1)
    sizes = case.sizes(steps)
    loss, grads = poisoned(f, inputs, params, sizes=sizes, batch=B)
    ref = rc.interpret(rc.grad(case.model), inputs, params, dtype="float64", sizes=sizes, batch=B)
    assert close(loss, ref.loss, 1e-10), (loss, ref.loss)
    for key in ref.grads:
        assert close(grads[key], ref.grads[key], 1e-10), key


@pytest.mark.parametrize("every", [None, 4, 100])
def test_benchmark_lstm_gradients(every):
    """The benchmark's LSTM (four gate products merged into one, gates over them): the interpreter's gradients."""
    m = lstm(5, 8, 3)
    rng = np.random.default_rng(1)
    inputs = {"x": rng.normal(size=(11, 2, 5)), "y": rng.integers(0, 3, size=(11, 2))}
    params = m.init_params(seed=1, dtype="float64")
    f = rc.compile(m, dtype="float64", **({"checkpoint": every} if every else {}))
    loss, grads = poisoned(f, inputs, params)
    ref = rc.interpret(rc.grad(m), inputs, params, dtype="float64")
    assert close(loss, ref.loss, 1e-10)
    for key in ref.grads:
        assert close(grads[key], ref.grads[key], 1e-10), key
    kernel = f.kernel("grad") if every is None else f.segments.kernel("segment_grad")
    assert renderer(kernel).in_place


def gated(read_after: bool) -> rc.Model:
    """A gated cell whose input products ``P x[t]`` the output map reads too when ``read_after``."""
    m = rc.Model("gated")
    x, y = m.input("x", 3), m.input("y", (), dtype="int")
    h = m.signal("h", 4)
    a = m.param("U", (8, 3)) @ x[t]
    z = rc.sigmoid(a[:4] + m.param("W", (4, 4)) @ h[t - 1])
    g = rc.tanh(a[4:] + m.param("R", (4, 4)) @ h[t - 1])
    h[t] = z * h[t - 1] + (1.0 - z) * g
    logits = m.param("V", (2, 4)) @ h[t]
    if read_after:
        logits = logits + m.param("Q", (2, 8)) @ a
    m.loss(rc.softmax_cross_entropy(logits, y[t]))
    return m


@pytest.mark.parametrize("read_after", [False, True])
def test_no_gate_over_an_input_a_later_stage_reads(read_after):
    """Input products also read after the scan are no donor; the gradients are the interpreter's either way."""
    m = gated(read_after)
    rng = np.random.default_rng(2)
    inputs = {"x": rng.normal(size=(6, 2, 3)), "y": rng.integers(0, 2, size=(6, 2))}
    params = m.init_params(seed=2, dtype="float64")
    f = rc.compile(m, dtype="float64")
    loss, grads = poisoned(f, inputs, params)
    ref = rc.interpret(rc.grad(m), inputs, params, dtype="float64")
    assert close(loss, ref.loss, 1e-10)
    for key in ref.grads:
        assert close(grads[key], ref.grads[key], 1e-10), key
    r = renderer(f.kernel("grad"))
    donors = r.in_place - r.aliases
    assert all(r.stage_of[u] <= max(r.stage_of[g] for g in r.users[d]) for d in donors for u in r.users[d])
    assert bool(donors) != read_after
