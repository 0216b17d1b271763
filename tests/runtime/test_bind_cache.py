"""The per-call checks survive the per-graph cache of :func:`rnnc.interpret.bind.bind` (issue 24): what is read
off the graph is made once, but every array is checked on every call, so a bad call after a good one is refused
with the interpreter's message, and a good call after it gives the first call's numbers."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from zoo import ZOO

import rnnc as rc
from rnnc.errors import InputError
from rnnc.interpret.bind import graph_facts

T, B, K = 4, 2, 3


@functools.cache
def case():
    c = ZOO["elman"](K=K, lengths=True)
    return c, rc.compile(c.model, dtype="float64")


def good():
    c, _ = case()
    inputs = c.make_inputs(np.random.default_rng(0), T, B, np.float64)
    inputs["x_lengths"] = np.array([T, T - 1])
    return inputs, c.params(0)


def with_label(value):
    inputs, params = good()
    y = inputs["y"].copy()
    y[1, 0] = value
    return dict(inputs, y=y), params


def with_input(name, value):
    inputs, params = good()
    return dict(inputs, **{name: value}), params


def with_param(name, value):
    inputs, params = good()
    return inputs, dict(params, **{name: value})


def without(name):
    inputs, params = good()
    inputs.pop(name)
    return inputs, params


BAD = {
    "label too large": (lambda: with_label(K), InputError, "out of range"),
    "label negative": (lambda: with_label(-1), InputError, "out of range"),
    "label huge uint64": (lambda: with_input("y", good()[0]["y"].astype(np.uint64) + np.uint64(2**63)),
                          InputError, "does not fit int64"),
    "length 0": (lambda: with_input("x_lengths", np.array([0, T])), InputError, "out of range"),
    "length past the axis": (lambda: with_input("x_lengths", np.array([T + 1, T])), InputError, "out of range"),
    "labels as floats": (lambda: with_input("y", good()[0]["y"].astype(np.float64)), InputError,
                         "expected integers"),
    "x with a wrong feature size": (lambda: with_input("x", np.zeros((T, B, 5))), ValueError, "expected an array"),
    "x with a wrong batch": (lambda: with_input("x", np.zeros((T, B + 1, 3))), ValueError, "batch size"),
    "x with a wrong length": (lambda: with_input("x", np.zeros((T + 1, B, 3))), ValueError, "axis 't'"),
    "x as strings": (lambda: with_input("x", np.full((T, B, 3), "a")), ValueError, "expected real numbers"),
    "unknown input": (lambda: with_input("z", np.zeros(3)), ValueError, "no input named 'z'"),
    "missing input": (lambda: without("x"), ValueError, "needs input 'x'"),
    "param with a wrong shape": (lambda: with_param("W", np.zeros((4, 5))), ValueError, "param 'W'"),
    "param as integers": (lambda: with_param("W", np.zeros((4, 4), dtype=np.int64)), ValueError, "expected floats"),
}


@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("entry", ["loss_and_grad", "forward"])
def test_a_bad_call_after_a_good_one_is_refused_like_the_interpreter_refuses_it(bad, entry):
    c, f = case()
    call = getattr(f, entry)
    first = f.loss_and_grad(*good())
    call(*good())
    make, error, needle = BAD[bad]
    with pytest.raises(error) as compiled:
        call(*make())
    with pytest.raises(error) as interpreted:
        rc.interpret(c.model, *make())
    # the gradient kernel's graph is named after the model with "_grad" added
    assert str(compiled.value).replace("elman_len_grad", "elman_len") == str(interpreted.value)
    assert needle in str(compiled.value)
    again = f.loss_and_grad(*good())            # the refusal left nothing behind
    assert again[0] == first[0]
    for name, g in first[1].items():
        np.testing.assert_array_equal(again[1][name], g)


def test_nan_is_refused_on_a_second_call_when_asked():
    _, f = case()
    inputs, params = good()
    f.loss_and_grad(inputs, params, check_finite=True)
    x = inputs["x"].copy()
    x[2, 1, 0] = np.nan
    with pytest.raises(InputError, match="holds nan"):
        f.loss_and_grad(dict(inputs, x=x), params, check_finite=True)
    W = params["W"].copy()
    W[0, 0] = np.inf
    with pytest.raises(InputError, match="holds inf"):
        f.forward(inputs, dict(params, W=W), check_finite="params")


def test_a_returned_gradient_does_not_change_on_the_next_call():
    _, f = case()
    inputs, params = good()
    loss, grads = f.loss_and_grad(inputs, params)
    kept = {k: v.copy() for k, v in grads.items()}
    f.loss_and_grad(inputs, {k: v * 2 for k, v in params.items()})
    for name, g in kept.items():
        np.testing.assert_array_equal(grads[name], g)


def test_the_facts_of_a_graph_are_made_once_and_a_changed_model_gets_new_ones():
    m = rc.Model("grows")
    x = m.input("x", 2)
    m.output("y", x[rc.t] * 2.0)
    first = m.graph
    assert graph_facts(first) is graph_facts(first)
    out = rc.interpret(m, {"x": np.ones((3, 1, 2))}, {})
    np.testing.assert_array_equal(out.outputs["y"], np.full((3, 1, 2), 2.0))
    z = m.input("z", 2)                 # the model grows after a call: a new graph, with its own facts
    m.output("w", z[rc.t] + 1.0)
    assert m.graph is not first and "z" in graph_facts(m.graph).used
    with pytest.raises(ValueError, match="needs input 'z'"):
        rc.interpret(m, {"x": np.ones((3, 1, 2))}, {})
