"""Compiled checkpointing (``rc.compile(m, checkpoint=k)``, :mod:`rnnc.runtime.segments`): gradients by segments
equal the whole-sequence kernel's and the interpreter's; memory held is one segment's, not the sequence's."""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from compiled_check import close  # noqa: E402
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo import ZOO  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc import t  # noqa: E402
from rnnc.runtime.segments import segment_cuts, segment_length  # noqa: E402


def quiet_compile(model, **options):
    """``rc.compile`` with warnings as errors: a model the segment plan fits compiles without one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return rc.compile(model, dtype="float64", **options)


@functools.cache
def pair(name: str):
    """The zoo case, its whole-sequence compiled model and its checkpointed one (kernels built once)."""
    case = ZOO[name]()
    return case, rc.compile(case.model, dtype="float64"), quiet_compile(case.model, checkpoint=2)


def assert_same(a, b, tol=1e-10):
    (la, ga), (lb, gb) = a, b
    assert close(la, lb, tol), (la, lb)
    assert set(ga) == set(gb)
    for k in ga:
        assert close(ga[k], gb[k], tol), k


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(["elman", "lstm"]), steps=st.integers(1, 11), every=st.integers(1, 13),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_segments_equal_whole_sequence_and_interpreter(name, steps, every, batch, seed):
    """Random T and k (k = 1, k not dividing T, k >= T included): the segmented gradients equal the
    whole-sequence kernel's and the interpreter's (float64, 1e-10)."""
    case, plain, ckpt = pair(name)
    ckpt.segments.checkpoint = every          # the same kernels serve every k: only the cuts change
    inputs = case.make_inputs(np.random.default_rng(seed), steps, batch, np.float64)
    params = case.params(seed)
    got = ckpt.loss_and_grad(inputs, params)
    assert_same(got, plain.loss_and_grad(inputs, params))
    ref = rc.interpret(rc.grad(case.model), inputs, params, dtype="float64")
    assert_same(got, (ref.loss, ref.grads))


@pytest.mark.parametrize("name", ["many_to_one", "autonomous", "stack2"])
def test_zoo_models_with_final_terms_no_inputs_and_stacks(name):
    """A loss read only at the last step (many-to-one: the last segment's own model), an autonomous model
    (sizes= and batch=), a two-layer stack (two states per boundary)."""
    case = ZOO[name]()
    f = quiet_compile(case.model, checkpoint=3)
    T, B = 8, 2
    inputs = case.make_inputs(np.random.default_rng(1), T, B, np.float64)
    params = case.params(1)
    got = f.loss_and_grad(inputs, params, sizes=case.sizes(T), batch=B)
    ref = rc.interpret(rc.grad(case.model), inputs, params, dtype="float64", sizes=case.sizes(T), batch=B)
    assert_same(got, (ref.loss, ref.grads))
    assert ("segment_grad_end" in f.stats) == (name == "many_to_one")


def test_initial_value_from_a_param_is_trained():
    """``m.initial(h, h0)``: the adjoint entering step 0 reaches ``h0`` through the initial value's VJP."""
    m = rc.Model("elman_h0")
    x = m.input("x", 3)
    h = m.signal("h", 4)
    h0 = m.param("h0", 4)
    m.initial(h, h0)
    h[t] = rc.tanh(m.param("U", (4, 3)) @ x[t] + m.param("W", (4, 4)) @ h[t - 1])
    m.loss(rc.fsum(h[t] * h[t]))
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(9, 2, 3))}
    params = {k: rng.normal(size=v.shape) for k, v in m.graph.params.items()}
    got = quiet_compile(m, checkpoint=4).loss_and_grad(inputs, params)
    ref = rc.interpret(rc.grad(m), inputs, params, dtype="float64")
    assert_same(got, (ref.loss, ref.grads))
    assert np.abs(got[1]["h0"]).max() > 0


def test_wrt_a_subset_of_params():
    case = ZOO["elman"]()
    inputs = case.make_inputs(np.random.default_rng(6), 9, 2, np.float64)
    got = quiet_compile(case.model, checkpoint=4, wrt=["W"]).loss_and_grad(inputs, case.params())
    ref = rc.interpret(rc.grad(case.model, wrt=["W"]), inputs, case.params(), dtype="float64")
    assert_same(got, (ref.loss, ref.grads))


def test_checkpoint_true_takes_the_square_root():
    assert [segment_length(True, n) for n in (1, 2, 4, 5, 9, 10, 10_000)] == [1, 2, 2, 3, 3, 4, 100]
    assert segment_length(7, 100) == 7
    case, plain, _ = pair("elman")
    inputs = case.make_inputs(np.random.default_rng(2), 10, 2, np.float64)
    assert_same(quiet_compile(case.model, checkpoint=True).loss_and_grad(inputs, case.params()),
                plain.loss_and_grad(inputs, case.params()))


def test_buffers_are_one_segments():
    """What the kernels hold is sized by k, not by T: the segment kernels' buffers at T = 96, k = 4 are
    under a quarter of the whole-sequence kernel's (which grow with T; the 24 boundary states are small arrays)."""
    case, plain, ckpt = pair("lstm")
    ckpt.segments.checkpoint = 4
    inputs = case.make_inputs(np.random.default_rng(3), 96, 2, np.float64)
    plain.loss_and_grad(inputs, case.params())
    ckpt.loss_and_grad(inputs, case.params())
    whole = plain.stats["grad"]["buffer_bytes"]
    held = ckpt.stats["segment_grad"]["buffer_bytes"] + ckpt.stats["segment_forward"]["buffer_bytes"]
    assert held * 4 < whole, (held, whole)


def test_truncation_within_chunks_splits_into_segments():
    """``truncate=(k1, k2)`` with ``k2 <= k1``: segments of whole chunks, each its own truncated gradient model;
    equal to the interpreter's truncated gradients, short last chunks (whose gradient reaches into the chunk
    before) included."""
    case = ZOO["elman"]()
    params = case.params(5)
    for (k1, k2), every, lengths in [((3, 2), 4, (1, 5, 6, 7, 13)), ((3, 3), 3, (5, 10))]:
        f = quiet_compile(case.model, truncate=(k1, k2), checkpoint=every)
        for T in lengths:
            inputs = case.make_inputs(np.random.default_rng(T), T, 2, np.float64)
            ref = rc.interpret(rc.grad(case.model, truncate=(k1, k2)), inputs, params, dtype="float64")
            assert_same(f.loss_and_grad(inputs, params), (ref.loss, ref.grads))
    assert segment_cuts(13, 4, (3, 2)) == [(0, 6), (6, 9), (9, 13)]       # 4 -> 6; the last chunk is 1 < k2
    assert segment_cuts(10, 3, (3, 3)) == [(0, 3), (3, 6), (6, 10)]
    assert segment_cuts(13, 5) == [(0, 5), (5, 10), (10, 13)]


@pytest.mark.parametrize("name, options, why", [("two_tap", {}, r"h\[t-2\]"),
                                                ("elman", {"truncate": (2, 3)}, "truncate"),
                                                ("variable_length", {}, "lengths")])
def test_models_outside_the_plan_warn_and_stay_right(name, options, why):
    """Deeper delays, truncation, lengths: the whole-sequence kernel, with a warning that says why."""
    case = ZOO[name]()
    with pytest.warns(RuntimeWarning, match=f"{why}.*saves no memory"):
        f = rc.compile(case.model, dtype="float64", checkpoint=2, **options)
    assert f.segments is None
    inputs = case.make_inputs(np.random.default_rng(4), 6, 2, np.float64)
    params = case.params()
    ref = rc.interpret(rc.grad(case.model, checkpoint=2, **options), inputs, params, dtype="float64")
    assert_same(f.loss_and_grad(inputs, params), (ref.loss, ref.grads))


def test_bad_checkpoint_values_are_refused():
    for bad in (0, -3, False):
        with pytest.raises(ValueError, match="checkpoint"):
            rc.compile(ZOO["elman"]().model, checkpoint=bad)
