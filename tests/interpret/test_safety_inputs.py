"""The checked boundary (:mod:`rnnc.interpret.boundary`): malformed arrays, states and sizes handed to the
interpreter and to a compiled CPU kernel are refused alike, with one line naming the thing, the value, where
it is and what would be valid — never a crash, a read out of bounds, or a number where the interpreter
refuses."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo import ZOO

import rnnc as rc
import rnnc.nn as nn
from rnnc import t
from rnnc.errors import InputError
from rnnc.train import Adam, Trainer

T, B, K = 4, 2, 3
FEW = settings(max_examples=8, deadline=None, derandomize=True)


@functools.cache
def case(name: str, **kw):
    c = ZOO[name](**kw)
    return c, rc.compile(c.model, dtype="float64")


def data(name: str, **kw):
    c, _ = case(name, **kw)
    return c.make_inputs(np.random.default_rng(0), T, B, np.float64), c.params(0)


def refusals(model, f, inputs, params, **kw) -> list[str]:
    """The messages of the interpreter, ``forward`` and ``loss_and_grad``: each must refuse with InputError."""
    calls = (lambda: rc.interpret(model, inputs, params, **kw), lambda: f.forward(inputs, params, **kw),
             lambda: f.loss_and_grad(inputs, params, **kw))
    out = []
    for call in calls:
        with pytest.raises(InputError) as err:
            call()
        out.append(str(err.value))
    assert all("\n" not in m for m in out), out
    return out


def refused_alike(model, f, inputs, params, *needles, **kw) -> str:
    msgs = refusals(model, f, inputs, params, **kw)
    assert len(set(msgs)) == 1, msgs
    for needle in needles:
        assert needle in msgs[0], (needle, msgs[0])
    return msgs[0]


# ------------------------------------------------------------------------------------------- class labels

bad_label = st.one_of(st.integers(K, 2**62), st.integers(-2**62, -1), st.sampled_from([K, -1, 10**8]))


@FEW
@given(value=bad_label, k=st.integers(0, T - 1), b=st.integers(0, B - 1))
def test_out_of_range_labels_are_refused_by_both_engines(value, k, b):
    (c, f), (inp, p) = case("elman"), data("elman")
    y = inp["y"].copy()
    y[k, b] = value
    msg = refused_alike(c.model, f, dict(inp, y=y), p, "input 'y'", f"{value} at index ({k}, {b})", "0..2",
                        "softmax_cross_entropy")
    assert "zoo.py" in msg            # the loss's own line


def test_uint64_labels_past_int64_are_refused_not_wrapped():
    (c, f), (inp, p) = case("elman"), data("elman")
    y = inp["y"].astype(np.uint64)
    y[1, 0] = 2**64 - 1
    refused_alike(c.model, f, dict(inp, y=y), p, "input 'y'", "18446744073709551615", "(1, 0)")
    ok = dict(inp, y=inp["y"].astype(np.uint64))        # in range: accepted, same as int64
    assert f.forward(ok, p).loss == pytest.approx(rc.interpret(c.model, inp, p).loss, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, bool, np.complex128])
def test_labels_of_the_wrong_dtype_are_refused(dtype):
    (c, f), (inp, p) = case("elman"), data("elman")
    refused_alike(c.model, f, dict(inp, y=inp["y"].astype(dtype)), p, "input 'y'", "int", np.dtype(dtype).name)


@FEW
@given(shape=st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple))
def test_labels_of_the_wrong_shape_are_refused(shape):
    (c, f), (inp, p) = case("elman"), data("elman")
    if shape[:2] == (T, B) and len(shape) == 2:
        return
    y = np.zeros(shape, dtype=np.int64)
    msgs = [m for m in _value_errors(c.model, f, dict(inp, y=y), p)]
    assert len(set(msgs)) == 1 and "'y'" in msgs[0], msgs


def _value_errors(model, f, inputs, params):
    for call in (lambda: rc.interpret(model, inputs, params), lambda: f.forward(inputs, params),
                 lambda: f.loss_and_grad(inputs, params)):
        with pytest.raises(ValueError) as err:
            call()
        assert "\n" not in str(err.value)
        yield str(err.value)


# ------------------------------------------------------------------------------------------- lengths


@FEW
@given(value=st.one_of(st.integers(T + 1, 2**40), st.integers(-2**40, 0)), b=st.integers(0, B - 1))
def test_lengths_out_of_range_are_refused(value, b):
    (c, f), (inp, p) = case("elman", lengths=True), data("elman", lengths=True)
    lens = inp["x_lengths"].copy()
    lens[b] = value
    refused_alike(c.model, f, dict(inp, x_lengths=lens), p, "input 'x_lengths'", f"{value} at index ({b},)",
                  f"1..{T}", "'t'")


# ------------------------------------------------------------------------------------------- one_hot


@functools.cache
def one_hot_model():
    m = rc.Model("one_hot_in")
    x, y = m.input("x", 2), m.input("y", (), dtype="int")
    U, W = m.param("U", (K, 2)), m.param("W", (K, K))
    h = m.signal("h", K)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + rc.one_hot(y[t], K))
    m.output("out", h[t])
    m.loss(rc.fsum(rc.square(h[t])))
    return m, rc.compile(m, dtype="float64")


@FEW
@given(value=st.one_of(st.integers(K, 2**40), st.integers(-2**40, -1)), k=st.integers(0, T - 1))
def test_one_hot_of_an_out_of_range_index_is_refused(value, k):
    m, f = one_hot_model()
    rng = np.random.default_rng(1)
    p = {"U": rng.normal(size=(K, 2)), "W": rng.normal(size=(K, K))}
    y = rng.integers(0, K, size=(T, B))
    inp = {"x": rng.normal(size=(T, B, 2)), "y": y}
    assert f.forward(inp, p).loss == pytest.approx(rc.interpret(m, inp, p).loss, rel=1e-10)
    y = y.copy()
    y[k, 1] = value
    refused_alike(m, f, dict(inp, y=y), p, "input 'y'", f"{value} at index ({k}, 1)", "one_hot", "0..2")


def test_an_index_computed_from_integer_inputs_is_checked_in_the_interpreter():
    m = rc.Model("computed_index")
    x, y = m.input("x", K), m.input("y", (), dtype="int")
    m.output("out", rc.one_hot(y[t] + y[t], K) + x[t])
    inp = {"x": np.zeros((T, B, K)), "y": np.ones((T, B), dtype=int)}
    assert rc.interpret(m, inp, {}).outputs["out"][..., 2].sum() == T * B
    with pytest.raises(InputError, match=r"computed from input 'y': 4 at index \(0, 0\).*one_hot.*0\.\.2"):
        rc.interpret(m, dict(inp, y=np.full((T, B), 2)), {})


# ------------------------------------------------------------------------------------------- NaN / Inf


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@FEW
@given(bad=st.sampled_from([np.nan, np.inf, -np.inf]), where=st.sampled_from(["x", "W"]),
       pos=st.tuples(st.integers(0, 2), st.integers(0, 1)))
def test_check_finite_names_the_input_or_param_and_where(bad, where, pos):
    (c, f), (inp, p) = case("elman"), data("elman")
    inp, p = dict(inp), dict(p)
    holder = inp if where == "x" else p
    arr = holder[where].copy()
    full = pos + (0,) if where == "x" else pos
    arr[full] = bad
    holder[where] = arr
    kind = "input" if where == "x" else "param"
    refused_alike(c.model, f, inp, p, f"{kind} '{where}'", str(bad), f"index {full}", "check_finite",
                  check_finite=True)
    f.forward(inp, p)                  # off by default: the arithmetic of NaN / Inf, as in numpy
    rc.interpret(c.model, inp, p)


# ------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size", [2.7, 0, -3, True, "3", None, np.float64(2.0)])
def test_sizes_must_be_positive_integers(size):
    c, f = case("autonomous")
    p = c.params(0)
    refused_alike(c.model, f, {}, p, "sizes['t']", "positive integer", sizes={"t": size}, batch=2)


@pytest.mark.parametrize("batch", [-2, 0, 1.5, False])
def test_batch_must_be_a_positive_integer(batch):
    c, f = case("autonomous")
    refused_alike(c.model, f, {}, c.params(0), "batch=", "positive integer", sizes={"t": 3}, batch=batch)


def test_zero_steps_and_empty_batches_are_refused_alike():
    (c, f), (inp, p) = case("elman"), data("elman")
    refused_alike(c.model, f, {"x": inp["x"][:0], "y": inp["y"][:0]}, p, "axis 't' has size 0", "input 'x'")
    refused_alike(c.model, f, {"x": inp["x"][:, :0], "y": inp["y"][:, :0]}, p, "batch size 0")


# ------------------------------------------------------------------------------------------- autonomous


def test_an_autonomous_model_runs_compiled():
    c, f = case("autonomous")
    p = c.params(0)
    ref = rc.interpret(c.model, {}, p, sizes={"t": 5}, batch=3)
    got = f.forward({}, p, sizes={"t": 5}, batch=3)
    np.testing.assert_allclose(got.outputs["state"], ref.outputs["state"], rtol=1e-12)
    assert got.loss == pytest.approx(ref.loss, rel=1e-12)
    loss, _ = f.loss_and_grad({}, p, sizes={"t": 5}, batch=3)
    assert loss == pytest.approx(ref.loss, rel=1e-12)
    state, outs = None, []
    for _ in range(5):
        o, state = f.step({}, state, p, batch=3 if state is None else None)
        outs.append(o["state"])
    np.testing.assert_allclose(np.stack(outs), ref.outputs["state"], rtol=1e-12)
    with pytest.raises(ValueError, match=r"sizes=\{'t': N\}"):
        f.forward({}, p)


# ------------------------------------------------------------------------------------------- step state


def step_start():
    c, f = case("two_tap")
    inp, p = data("two_tap")
    _, state = f.step({"x": inp["x"][0]}, None, p)
    return f, inp, p, state


@FEW
@given(shape=st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple))
def test_a_history_of_the_wrong_shape_is_refused(shape):
    f, inp, p, state = step_start()
    if shape == state["h"].shape:
        return
    with pytest.raises(InputError) as err:
        f.step({"x": inp["x"][1]}, {"h": np.zeros(shape)}, p)
    msg = str(err.value)
    assert "\n" not in msg and "state 'h'" in msg and str(state["h"].shape) in msg and str(shape) in msg


@pytest.mark.parametrize("bad, needle", [
    (0.0, "scalar"), (np.float64(1.0), "scalar"), ([1], "dict"), ("h", "dict"),
    ({"h": np.zeros((1, B, 3))}, "(1, 2, 3)"),                       # shorter than the delay h[t-2]
    ({"h": np.zeros((3, B, 3))}, "(3, 2, 3)"),
    ({"h": np.zeros((2, B + 1, 3))}, "(2, 3, 3)"), ({"h": np.zeros((2, B, 5))}, "(2, 2, 5)"),
    ({"h": np.full((2, B, 3), "a")}, "real numbers"), ({}, "delayed values"), ({"q": 1.0}, "'q'"),
])
def test_step_states_are_checked_against_the_models_delays(bad, needle):
    f, inp, p, state = step_start()
    state = {"h": bad} if not isinstance(bad, (dict, list, str)) else bad
    with pytest.raises(InputError) as err:
        f.step({"x": inp["x"][1]}, state, p)
    assert "\n" not in str(err.value) and needle in str(err.value) and "step()" in str(err.value)


def test_step_check_finite_names_the_state():
    f, inp, p, state = step_start()
    bad = state["h"].copy()
    bad[1, 0, 2] = np.inf
    with pytest.raises(InputError, match=r"state 'h' holds inf at index \(1, 0, 2\)"):
        f.step({"x": inp["x"][1]}, {"h": bad}, p, check_finite=True)
    f.step({"x": inp["x"][1]}, state, p, check_finite=True)


# ------------------------------------------------------------------------------------------- the Trainer


def tiny_classifier():
    return nn.Classifier((nn.Flatten(), nn.Dense(3), nn.Softmax()), (4,))


@pytest.mark.parametrize("engine", ["interpret", "compiled"])
def test_the_trainer_refuses_one_based_labels_before_training(engine):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    y[:39] = np.clip(y[:39], 0, 2)
    tr = Trainer(tiny_classifier(), Adam(0.01), batch_size=8, dtype="float64", progress=False, engine=engine)
    before = {k: v.copy() for k, v in tr.params.items()}
    one_based = y + 1
    one_based[:38] = np.minimum(one_based[:38], 2)     # only the last sample, in the last batch, is out of range
    one_based[39] = 3
    with pytest.raises(InputError, match=r"input 'y': 3 at index \(39,\).*softmax_cross_entropy.*0\.\.2"):
        tr.fit({"x": X, "y": one_based}, epochs=1)
    assert tr.epoch == 0 and tr.batch_index == 0
    assert all(np.array_equal(before[k], tr.params[k]) for k in before)


def test_the_trainer_checks_finite_values_by_default():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 4)), rng.integers(0, 3, size=16)
    X[5, 2] = np.nan
    tr = Trainer(tiny_classifier(), Adam(0.01), batch_size=8, dtype="float64", progress=False, engine="interpret")
    with pytest.raises(InputError, match=r"input 'x' holds nan at index \(5, 2\)"):
        tr.fit({"x": X, "y": y}, epochs=1)
    off = Trainer(tiny_classifier(), Adam(0.01), batch_size=8, dtype="float64", progress=False,
                  engine="interpret", check_finite=False)
    off.fit({"x": X, "y": y}, epochs=1)
    assert np.isnan(off.history[0]["loss"])


def test_the_trainer_refuses_a_param_that_holds_nan_before_the_step():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 4)), rng.integers(0, 3, size=16)
    tr = Trainer(tiny_classifier(), Adam(0.01), batch_size=8, dtype="float64", progress=False, engine="compiled")
    name = sorted(tr.params)[0]
    tr.params[name] = tr.params[name].copy()
    tr.params[name].flat[1] = np.inf
    with pytest.raises(InputError, match=rf"param '{name}' holds inf at index"):
        tr.fit({"x": X, "y": y}, epochs=1)
