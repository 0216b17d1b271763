"""Streaming inference and generation (``rnnc/runtime/generate.py``, ``Compiled.step`` / ``initial_state``).

Streaming ``T`` steps one at a time equals ``forward`` over ``T`` steps; compiled generation equals the
interpreter's reference (which re-runs the whole sequence at every step) for greedy decoding and, drawing the
same uniforms, for seeded sampling; a seed fixes the text.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from paths import CACHE_DIR, EXAMPLES

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

from zoo import ZOO  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc import t  # noqa: E402
from rnnc.errors import GraphError, InputError  # noqa: E402
from rnnc.runtime.generate import generate, sample  # noqa: E402

V, H, T, B = 6, 5, 7, 3
_COMPILED: dict = {}


def charnet(feed: str = "index", out: str = "logits", h0: str | None = None) -> rc.Model:
    """h[t] = tanh(U x[t] + W h[t-1] + b), z[t] = V h[t] + c: ``x`` is a token id (``feed="index"``, one-hot
    inside) or a one-hot row (``"one_hot"``); the output is ``z`` (logits) or ``softmax(z)`` (``out="probs"``);
    ``h0`` sets h's initial value from an axis-free ``"input"`` or a ``"param"``. ``h_T`` needs the whole axis."""
    m = rc.Model(f"charnet_{feed}_{out}_{h0}")
    if feed == "index":
        x = m.input("x", (), dtype="int")
        inp = rc.one_hot(x[t], V)
    else:
        x = m.input("x", V)
        inp = x[t]
    U, W, b = m.param("U", (H, V)), m.param("W", (H, H)), m.param("b", H)
    Vo, c = m.param("V", (V, H)), m.param("c", V)
    h = m.signal("h", H)
    if h0 == "input":
        m.initial(h, m.input("h0", H, axes=()))
    elif h0 == "param":
        m.initial(h, m.param("h0", H, init="normal"))
    h[t] = rc.tanh(U @ inp + W @ h[t - 1] + b)
    z = Vo @ h[t] + c
    m.output(out, rc.softmax(z) if out == "probs" else z)
    m.output("h_T", h.last(t))
    return m


def compiled(feed="index", out="logits", h0=None, dtype="float64"):
    key = (feed, out, h0, dtype)
    if key not in _COMPILED:
        m = charnet(feed, out, h0)
        _COMPILED[key] = (m, m.init_params(seed=1, dtype=dtype), rc.compile(m, dtype=dtype, feedback={"x": out}))
    return _COMPILED[key]


def tokens(shape, seed=0):
    return np.random.default_rng(seed).integers(0, V, shape)


# ------------------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("name", ["two_tap", "lstm"])
def test_streaming_t_steps_equals_forward_over_t(name):
    case = ZOO[name]()
    f = rc.compile(case.model, dtype="float64")
    inputs, params = case.make_inputs(np.random.default_rng(0), T, B, np.float64), case.params(0)
    full = f.forward({"x": inputs["x"]}, params).outputs
    state = f.initial_state(B)
    assert all(v.shape[1] == B and not v.any() for v in state.values())
    for k in range(T):
        out, state = f.step({"x": inputs["x"][k]}, state, params)
        for key, v in out.items():
            np.testing.assert_allclose(v, full[key][k], rtol=1e-12, atol=1e-13, err_msg=f"{key} at step {k}")


@pytest.mark.parametrize("h0", ["input", "param"])
def test_initial_state_holds_the_models_initial_values(h0):
    m, p, f = compiled("index", "logits", h0)
    x = tokens((T, B))
    extra = {"h0": np.random.default_rng(2).normal(size=(B, H))} if h0 == "input" else {}
    full = f.forward({"x": x, **extra}, p).outputs
    state = f.initial_state(B, p, extra)
    want = extra["h0"] if h0 == "input" else np.broadcast_to(p["h0"], (B, H))
    np.testing.assert_array_equal(state["h"][0], want)
    none_state = None
    for k in range(T):
        out, state = f.step({"x": x[k]}, state, p)                       # h0 not needed once a state is given
        ref, none_state = f.step({"x": x[k], **(extra if none_state is None else {})}, none_state, p)
        np.testing.assert_allclose(out["logits"], full["logits"][k], rtol=1e-12, atol=1e-13)
        np.testing.assert_array_equal(out["logits"], ref["logits"])


def test_initial_state_needs_the_inputs_its_initial_values_read():
    _, p, f = compiled("index", "logits", "input")
    with pytest.raises(ValueError, match="'h0'"):
        f.initial_state(2, p)
    with pytest.raises(ValueError, match="no input named 'q'"):
        f.initial_state(2, p, {"q": np.zeros((2, H))})
    with pytest.raises(InputError, match="batch="):
        f.initial_state(0, p, {"h0": np.zeros((2, H))})


def test_step_leaves_out_outputs_that_need_the_whole_axis():
    _, p, f = compiled()
    out, state = f.step({"x": tokens(B)}, f.initial_state(B), p)
    assert set(out) == {"logits"} and set(state) == {"h"} and state["h"].shape == (1, B, H)


def test_step_in_the_old_order_is_refused_with_the_new_one():
    _, p, f = compiled()
    with pytest.raises(TypeError, match=r"step\(inputs_t, state, params\)"):
        f.step(None, {"x": tokens(B)}, p)
    _, state = f.step({"x": tokens(B)}, None, p)
    with pytest.raises(TypeError, match="old step"):
        f.step(state, {"x": tokens(B)}, p)


def test_a_step_state_is_still_checked():
    _, p, f = compiled()
    with pytest.raises(InputError, match=r"state 'h'.*\(1, 3, 5\)"):
        f.step({"x": tokens(B)}, {"h": np.zeros((1, B + 1, H))}, p)


# ------------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("feed, out", [("index", "logits"), ("one_hot", "logits"), ("index", "probs")])
def test_greedy_generation_compiled_equals_interpreted_in_float64(feed, out):
    m, p, f = compiled(feed, out)
    prime = tokens(4, seed=3)
    got = f.generate(p, prime, 12, temperature=0)
    want = generate(m, p, prime, 12, {"x": out}, temperature=0, dtype="float64")
    assert got.shape == (16,) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[:4], prime)


def test_batched_prime_generates_each_sequence_as_alone():
    m, p, f = compiled()
    prime = tokens((3, 4), seed=4)                                         # (P, B): 4 sequences
    got = f.generate(p, prime, 9, temperature=0)
    assert got.shape == (12, 4)
    for j in range(4):
        np.testing.assert_array_equal(got[:, j], f.generate(p, prime[:, j], 9, temperature=0))
    np.testing.assert_array_equal(got, generate(m, p, prime, 9, {"x": "logits"}, temperature=0, dtype="float64"))


def test_seeded_sampling_is_reproducible_and_matches_the_reference():
    m, p, f = compiled()
    prime = tokens((2, 3), seed=5)
    kw = {"temperature": 0.8, "top_k": 4}
    a = f.generate(p, prime, 30, seed=7, **kw)
    np.testing.assert_array_equal(a, f.generate(p, prime, 30, seed=7, **kw))
    np.testing.assert_array_equal(a, f.generate(p, prime, 30, seed=np.random.default_rng(7), **kw))
    assert not np.array_equal(a, f.generate(p, prime, 30, seed=8, **kw))
    np.testing.assert_array_equal(a, generate(m, p, prime, 30, {"x": "logits"}, seed=7, dtype="float64", **kw))


def test_generation_with_an_initial_state_input():
    m, p, f = compiled("index", "logits", "input")
    h0 = np.random.default_rng(6).normal(size=(1, H))
    got = f.generate(p, [1, 2], 8, temperature=0, inputs={"h0": h0})
    want = generate(m, p, [1, 2], 8, {"x": "logits"}, temperature=0, inputs={"h0": h0}, dtype="float64")
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, f.generate(p, [1, 2], 8, temperature=0, inputs={"h0": h0 + 3}))


def test_float32_generation_runs_compiled():
    _, p, f = compiled(dtype="float32")
    ids = f.generate(p, [0], 20, temperature=1.0, seed=0)
    assert ids.shape == (21,) and ids.min() >= 0 and ids.max() < V


# ------------------------------------------------------------------------------------------- sampling


def test_sampling_draws_from_the_tempered_distribution():
    z = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    rng = np.random.default_rng(0)
    draws = sample(np.repeat(z, 40_000, axis=0), 1.0, None, rng)
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / draws.size, [0.1, 0.2, 0.3, 0.4], atol=0.01)
    hot = sample(np.repeat(z, 40_000, axis=0), 0.5, None, rng)                # p^2, renormalised
    np.testing.assert_allclose(np.bincount(hot, minlength=4) / hot.size, np.array([1, 4, 9, 16]) / 30, atol=0.01)
    top2 = sample(np.repeat(z, 10_000, axis=0), 1.0, 2, rng)
    assert set(np.unique(top2)) == {2, 3}
    np.testing.assert_array_equal(sample(z, 0, None, rng), [3])
    np.testing.assert_array_equal(sample(np.exp(z), 0, None, rng, probs=True), [3])
    a, b = (sample(np.repeat(z, 50, axis=0), 0.7, 3, np.random.default_rng(1)) for _ in range(2))
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("feedback, needle", [
    ({"y": "logits"}, "no input 'y'"), ({"x": "p"}, "no output 'p'"), ({"x": "h_T"}, "shape (V,) along an axis"),
    ("x", "one pair"), ({"x": "logits", "y": "z"}, "one pair"),
])
def test_a_wrong_feedback_is_refused_at_compile(feedback, needle):
    with pytest.raises(GraphError) as err:
        rc.compile(charnet(), feedback=feedback)
    assert needle in str(err.value)


def test_a_feedback_input_that_cannot_hold_a_token_is_refused():
    m = rc.Model("wide")
    x = m.input("x", 2)
    h = m.signal("h", V)
    h[t] = rc.tanh(m.param("U", (V, 2)) @ x[t] + h[t - 1])
    m.output("z", h[t])
    with pytest.raises(GraphError, match=r"one-hot float row of shape \(6,\)"):
        rc.compile(m, feedback={"x": "z"})


@pytest.mark.parametrize("kw, needle", [
    ({"prime": np.array([], dtype=int)}, "P >= 1"), ({"prime": [0.5, 1.0]}, "integer token ids"),
    ({"prime": [1, V]}, f"valid ids are 0..{V - 1}"), ({"prime": [[[1]]]}, "shape (P,) or (P, B)"),
    ({"steps": -1}, "steps"), ({"temperature": -0.1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"),
])
def test_generation_options_are_checked(kw, needle):
    _, p, f = compiled()
    args = {"prime": [1, 2], "steps": 3, **kw}
    with pytest.raises(InputError) as err:
        f.generate(p, args.pop("prime"), args.pop("steps"), **args)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_generate_without_feedback_says_how_to_give_it():
    m = charnet()
    with pytest.raises(GraphError, match=r"feedback=\{'x': 'logits'\}"):
        rc.compile(m).generate(m.init_params(seed=0), [1], 3)


# ------------------------------------------------------------------------------------------- the example


def test_char_lstm_generation_is_reproducible_for_a_seed():
    sys.path.insert(0, str(EXAMPLES))
    import char_lstm as lm

    m = lm.build(layers=2, hidden=8)
    p = m.init_params(seed=0, dtype="float64")
    a = lm.sample(m, p, "def ", 40, temperature=0.8, seed=3)
    assert a == lm.sample(m, p, "def ", 40, temperature=0.8, seed=3)
    assert a != lm.sample(m, p, "def ", 40, temperature=0.8, seed=4)
    assert a.startswith("def ") and len(a) == 44 and set(a) <= set(lm.CHARS)
    prime = np.array([lm.INDEX[c] for c in "def "])
    want = generate(m, p, prime, 20, {"x": "logits"}, temperature=0, inputs=lm.zero_state(m, 1), dtype="float64")
    assert lm.sample(m, p, "def ", 20, temperature=0) == lm.decode(want)
