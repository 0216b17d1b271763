"""Graph-time checks of issue 18: every DSL mistake below is refused when it is written, in one line that names
the thing at fault and quotes this file's own ``file:line``; valid feature indices (negative ones included)
give the same values in the interpreter and the compiled CPU kernel.

Each bad expression is written as a one-line ``lambda`` so that its line is ``thunk.__code__.co_firstlineno``.
"""
from __future__ import annotations

import copy
import inspect
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paths import CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

import rnnc as rc  # noqa: E402
import rnnc.nn as nn  # noqa: E402
from rnnc import t  # noqa: E402
from rnnc.ops.leaves import MAX_DELAY  # noqa: E402

HERE = __file__


def refused(exc, thunk, *names: str) -> str:
    """Run ``thunk`` (a one-line lambda): it raises ``exc`` in one line naming ``names`` and quoting its line."""
    line = thunk.__code__.co_firstlineno
    with pytest.raises(exc) as err:
        thunk()
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert f"{HERE}:{line}" in msg, msg
    for name in names:
        assert name in msg, (name, msg)
    return msg


def next_line() -> int:
    return inspect.currentframe().f_back.f_lineno + 1


def _model(size=3):
    m = rc.Model("m")
    return m, m.input("x", size), m.input("y", (), dtype="int"), m.signal("h", size)


# ----------------------------------------------------------------------------- feature indices


@given(st.integers(1, 6), st.data())
def test_out_of_range_feature_index_is_refused_not_wrapped(size, data):
    m, x, _, _ = _model(size)
    k = data.draw(st.one_of(st.integers(size, 10**30), st.integers(-10**30, -size - 1)))
    msg = refused(rc.ShapeError, lambda: x[t][k], f"x[t][{k}]", f"{size} features")
    assert f"{-size} to {size - 1}" in msg


def test_the_wrapping_indices_of_the_issue():
    m, x, _, _ = _model(3)
    refused(rc.ShapeError, lambda: x[t][7], "x[t][7]", "out of range")
    refused(rc.ShapeError, lambda: x[t][-5], "x[t][-5]", "out of range")
    refused(rc.ShapeError, lambda: x[t][5:9], "x[t][5:9]", "3 features")    # not "slice [3:3]"
    refused(rc.ShapeError, lambda: x[t-1][np.int64(4)], "x[t-1][4]")


@given(st.integers(1, 6), st.data())
def test_out_of_range_or_empty_feature_slice_is_refused_as_written(size, data):
    m, x, _, _ = _model(size)
    bound = st.one_of(st.none(), st.integers(-3 * size, 3 * size))
    start, stop = data.draw(bound), data.draw(bound)
    a = 0 if start is None else start + size if start < 0 else start
    b = size if stop is None else stop + size if stop < 0 else stop
    if all(v is None or -size <= v <= size for v in (start, stop)) and a < b:
        assert x[t][start:stop].shape == (b - a,)
        return
    written = f"x[t][{'' if start is None else start}:{'' if stop is None else stop}]"
    refused(rc.ShapeError, lambda: x[t][start:stop], written, f"{size} features")


@pytest.mark.parametrize("key", [1.0, "0", (0, 1), None, True, [0]])
def test_feature_index_of_another_type_is_refused(key):
    m, x, _, _ = _model(3)
    refused(TypeError, lambda: x[t][key], "x[t]", "int or a slice")


def test_scalar_and_stepped_feature_indexing_are_refused():
    m, x, y, _ = _model(3)
    refused(rc.ShapeError, lambda: y[t][0], "y[t][0]", "scalar")
    refused(ValueError, lambda: x[t][0:3:2], "x[t][0:3:2]", "step 1")


def test_slice_features_and_reshape_check_their_arguments():
    m, x, _, _ = _model(4)
    refused(TypeError, lambda: rc.ops.slice_features(x[t], 0.5, 2), "slice_features", "start")
    refused(rc.ShapeError, lambda: rc.reshape(x[t], (4, -1)), "reshape of x", "(4, -1)")
    refused(rc.ShapeError, lambda: rc.reshape(x[t], (-2, -2)), "reshape of x")
    refused(rc.ShapeError, lambda: rc.split(x[t], [5, -1]), "split", "[5, -1]")
    refused(rc.ShapeError, lambda: rc.split(x[t], [1.5, 2.5]), "split", "positive ints")
    refused(ValueError, lambda: rc.fsum(x[t], 0), "axis=-1", "got 0")


# ----------------------------------------------------------------------------- valid indices: both engines agree

SIZE = 4
SLICES = [slice(-3, None), slice(None, -1), slice(1, -1), slice(-4, 2), slice(0, 4), slice(-1, None)]
_COMPILED: dict = {}


def _index_model():
    m = rc.Model("feature_indices")
    x = m.input("x", SIZE)
    y = m.input("y", (), dtype="int")
    for k in range(-SIZE, SIZE):
        m.output(f"i{k + SIZE}", x[t][k])
    for n, s in enumerate(SLICES):
        m.output(f"s{n}", x[t][s])
    m.output("hot", rc.one_hot(y[t], 3))
    return m


def _compiled():
    if "f" not in _COMPILED:
        _COMPILED["m"] = _index_model()
        _COMPILED["f"] = rc.compile(_COMPILED["m"], dtype="float64")
    return _COMPILED["m"], _COMPILED["f"]


@given(st.integers(0, 2**32 - 1))
def test_valid_indices_agree_in_the_interpreter_and_compiled(seed):
    m, f = _compiled()
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.normal(size=(3, 2, SIZE)), "y": rng.integers(0, 3, size=(3, 2))}
    ref = rc.interpret(m, inputs, {}, dtype="float64")
    out = f.forward(inputs, {})
    for k in range(-SIZE, SIZE):
        np.testing.assert_array_equal(ref.outputs[f"i{k + SIZE}"], inputs["x"][..., k])
        np.testing.assert_array_equal(out.outputs[f"i{k + SIZE}"], inputs["x"][..., k])
    for n, s in enumerate(SLICES):
        np.testing.assert_array_equal(ref.outputs[f"s{n}"], inputs["x"][..., s])
        np.testing.assert_array_equal(out.outputs[f"s{n}"], inputs["x"][..., s])
    hot = np.eye(3)[inputs["y"]]
    np.testing.assert_array_equal(ref.outputs["hot"], hot)
    np.testing.assert_array_equal(out.outputs["hot"], hot)


# ----------------------------------------------------------------------------- one_hot


def test_one_hot_of_a_float_is_refused_naming_the_operand():
    m, x, y, _ = _model(1)
    W = m.param("W", (1,))
    refused(rc.ShapeError, lambda: rc.one_hot(x[t][0], 3), "one_hot", "float", "integer")
    refused(rc.ShapeError, lambda: rc.one_hot(W[0], 3), "one_hot", "float")
    refused(rc.ShapeError, lambda: rc.one_hot(0.3, 3), "one_hot", "float")


@given(st.one_of(st.integers(-10**6, 0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3),
                 st.none()))
def test_one_hot_classes_must_be_a_positive_int(classes):
    m, x, y, _ = _model()
    refused(ValueError, lambda: rc.one_hot(y[t], classes), "one_hot of y", "classes", repr(classes))


def test_one_hot_accepts_numpy_int_classes():
    m, x, y, _ = _model()
    assert rc.one_hot(y[t], np.int32(5)).shape == (5,)


# ----------------------------------------------------------------------------- delays


@given(st.one_of(st.integers(MAX_DELAY + 1, 10**40), st.integers(-10**40, -MAX_DELAY - 1)))
def test_delays_beyond_the_limit_are_refused_naming_the_signal(k):
    m, x, _, h = _model()
    refused(rc.GraphError, lambda: h[t - k], f"h[t{-k:+d}]", str(MAX_DELAY))
    refused(rc.GraphError, lambda: x[t + k], f"x[t{k:+d}]", str(MAX_DELAY))


def test_the_delay_of_the_issue_and_the_limit_itself():
    m, x, _, h = _model()
    refused(rc.GraphError, lambda: h[t - 10**19], "h[t-10000000000000000000]")
    h[t] = 0.5 * h[t - MAX_DELAY] + x[t] + h[t - np.int64(1)]
    m.output("o", h[t])
    out = rc.interpret(m, {"x": np.ones((2, 1, 3))}, {}).outputs["o"]
    assert np.allclose(out[:, 0, 0], [1, 2])


@pytest.mark.parametrize("k", [1.0, 0.5, True, "1", None])
def test_non_integer_offsets_are_refused(k):
    m, x, _, h = _model()
    refused(TypeError, lambda: h[t - k], "offsets", repr(k))


# ----------------------------------------------------------------------------- shapes and axes

BAD_DIMS = st.one_of(st.integers(-10**6, 0), st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=2))
BAD_SHAPES = st.one_of(BAD_DIMS.filter(lambda s: not isinstance(s, str) or not s), st.tuples(BAD_DIMS),
                       st.tuples(st.integers(1, 4), BAD_DIMS), st.lists(BAD_DIMS, min_size=1, max_size=3),
                       st.just({3: 4}), st.just(np.ones(2)))


@given(BAD_SHAPES)
def test_bad_shapes_are_refused_naming_the_declaration(shape):
    m = rc.Model("m")
    refused(rc.ShapeError, lambda: m.param("W", shape), "param 'W'", "shape")
    refused(rc.ShapeError, lambda: m.input("x", shape), "input 'x'", "shape")
    refused(rc.ShapeError, lambda: m.signal("h", shape), "signal 'h'", "shape")
    assert not m.params and not m.inputs and not m.signals


def test_the_shapes_of_the_issue_and_the_valid_kinds():
    m = rc.Model("m")
    refused(rc.ShapeError, lambda: m.param("W", 2.5), "param 'W'", "2.5")
    refused(rc.ShapeError, lambda: m.param("W", None), "param 'W'", "None")
    assert m.param("A", np.int64(3)).shape == (3,)
    assert m.param("B", [2, np.int32(3)]).shape == (2, 3)
    assert m.input("s", ()).shape == ()


def test_bad_inits_are_refused_at_the_declaration():
    m = rc.Model("m")
    refused(ValueError, lambda: m.param("W", 3, init="identity"), "param 'W'", "Identity", "(3,)")
    refused(ValueError, lambda: m.param("W", (), init=rc.init.Orthogonal()), "param 'W'", "Orthogonal")
    refused(ValueError, lambda: m.param("W", (2, 2), init=np.ones(3)), "param 'W'", "(3,)")
    refused(TypeError, lambda: m.param("W", (2, 2), init={"a": 1}), "param 'W'", "dict")
    refused(TypeError, lambda: m.param("W", (2,), init=np.array(["a", "b"])), "param 'W'")
    assert not m.params


@given(st.one_of(st.text(min_size=1, max_size=3), st.integers(), st.none(),
                 st.lists(st.one_of(st.text(max_size=2), st.integers(), st.none()), min_size=1, max_size=3)))
def test_axes_that_are_not_rc_axis_values_are_refused(bad):
    m = rc.Model("m")
    if isinstance(bad, list):
        bad = [t] + bad
    refused(rc.GraphError, lambda: m.input("x", 3, axes=bad), "input 'x'", "rc.Axis")
    if bad is not None:                                   # a signal's axes=None: set by its equation
        refused(rc.GraphError, lambda: m.signal("h", 3, axes=bad), "signal 'h'", "rc.Axis")


def test_axes_of_the_issue_and_repeated_axes():
    m = rc.Model("m")
    refused(rc.GraphError, lambda: m.input("x", 3, axes=["t"]), "input 'x'", "'t'")
    refused(rc.GraphError, lambda: m.signal("h", 3, axes=(t, t)), "signal 'h'", "twice")
    assert m.signal("g", 3, axes=t).axes == (t,)


def test_axes_mismatch_names_the_signal_and_line():
    m, x, _, h = _model()
    i, = rc.axes("i")
    refused(rc.GraphError, lambda: x[i], "input 'x'", "(t)", "(i)")
    h[t] = x[t] + h[t - 1]
    refused(rc.GraphError, lambda: h[i], "signal 'h'", "(i)")


# ----------------------------------------------------------------------------- values from another model


def test_a_param_of_another_model_is_refused_at_its_use():
    other = rc.Model("other")
    W = other.param("W", (3, 3)); declared = f"{HERE}:{next_line() - 1}"  # noqa: E702
    m, x, _, h = _model()
    h[t] = W @ h[t - 1] + x[t]
    m.output("o", h[t])
    with pytest.raises(rc.GraphError) as err:
        rc.schedule(m)
    msg = str(err.value)
    assert "\n" not in msg and "param 'W'" in msg and "model 'm'" in msg, msg
    assert f"used at {h.defined_at}" in msg and declared in msg, msg


def test_a_per_sample_input_of_another_model_is_refused():
    other = rc.Model("other")
    z = other.input("z", 3, axes=())
    m, x, _, h = _model()
    h[t] = x[t] + z + h[t - 1]
    m.output("o", h[t])
    with pytest.raises(rc.GraphError) as err:
        rc.interpret(m, {"x": np.ones((2, 1, 3))}, {})
    assert "input 'z'" in str(err.value) and f"used at {h.defined_at}" in str(err.value)


# ----------------------------------------------------------------------------- algebraic loops


def test_an_algebraic_loop_reports_file_and_line_on_its_first_line():
    m, x, _, h = _model()
    g = m.signal("g", 3)
    h[t] = rc.tanh(g[t] + x[t]); line = h.defined_at  # noqa: E702
    g[t] = rc.sigmoid(h[t])
    with pytest.raises(rc.CycleError) as err:
        rc.schedule(m)
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"{line}: algebraic loop") and "h -> g" in first, first
    assert line.startswith(HERE)


def test_a_self_loop_reports_file_and_line_first():
    m, x, _, h = _model()
    h[t] = h[t] + x[t]
    with pytest.raises(rc.CycleError) as err:
        rc.schedule(m)
    assert str(err.value).splitlines()[0].startswith(f"{h.defined_at}: algebraic loop")


# ----------------------------------------------------------------------------- saved layer specs

_CLF = nn.Classifier((nn.Conv2d(2, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Dense(4, "relu"),
                      nn.Dropout(0.2), nn.Softmax()), (1, 4, 4))
BAD_FIELDS = [("layers", 3, "units", "4"), ("layers", 3, "units", 0), ("layers", 3, "units", 2.5),
              ("layers", 3, "activation", "class"), ("layers", 3, "bias", 1), ("layers", 4, "p", 1.0),
              ("layers", 4, "p", "0.5"), ("layers", 0, "kernel", [3, "a"]), ("layers", 0, "stride", -1),
              ("layers", 0, "init", {"init": "Normal", "std": "x"}), ("layers", 0, "init", {"init": "os"}),
              ("layers", 0, "init", {"init": "Normal", "mean": 1.0}), ("layers", 0, "filters", None)]


@pytest.mark.parametrize("layers, k, field, value", BAD_FIELDS)
def test_bad_spec_fields_are_refused_naming_the_field(layers, k, field, value):
    spec = copy.deepcopy(_CLF.spec())
    spec[layers][k][field] = value
    with pytest.raises(nn.SpecError) as err:
        nn.Classifier.from_spec(spec)
    msg = str(err.value)
    assert msg.startswith(f"layers[{k}].{field}") and "\n" not in msg, msg
    assert ".py:" not in msg, msg                                   # no caller's line: the file is the place


@pytest.mark.parametrize("change, field", [
    ({"name": "class"}, "name"), ({"name": "__x"}, "name"), ({"input_shape": [True, 4, 4]}, "input_shape"),
    ({"input_shape": "144"}, "input_shape"), ({"layers": {"layer": "Dense"}}, "layers"),
])
def test_bad_classifier_fields_are_refused(change, field):
    spec = {**copy.deepcopy(_CLF.spec()), **change}
    with pytest.raises(nn.SpecError, match=rf"^{field}: ") as err:
        nn.Classifier.from_spec(spec)
    assert ".py:" not in str(err.value)


def test_unknown_missing_and_deeply_nested_layers_are_refused():
    with pytest.raises(nn.SpecError, match=r"^layer: unknown layer type 'class'"):
        nn.from_spec({"layer": "class"})
    with pytest.raises(nn.SpecError, match=r"needs the fields \['units'\]"):
        nn.from_spec({"layer": "Dense"})
    deep = {"layer": "Sequential", "layers": []}
    for _ in range(200):
        deep = {"layer": "Sequential", "layers": [deep]}
    with pytest.raises(nn.SpecError, match="deeper than"):
        nn.from_spec(deep)


def test_every_layer_spec_round_trips():
    layers = (nn.Conv2d(2, (3, 3), padding=1, activation="relu", init=rc.init.Normal(0.1)), nn.BatchNorm(),
              nn.SpatialRNN((2, 2), cell=nn.LSTMCell(3, peephole=True)), nn.AvgPool2d("all"), nn.Dropout(0.2),
              nn.Flatten(), nn.Dense(3), nn.Activation("tanh"), nn.Normalizer(2.0), nn.Softmax(),
              nn.GRU(4, deep_output=(3,)), nn.Jordan(3, 2), nn.Bidirectional(nn.ElmanCell(2)))
    for layer in layers:
        assert nn.from_spec(layer.spec()) == layer
