"""Random small recurrent models (hypothesis): the rolled interpreter equals the unrolled one, and Elman on
random shapes, lengths and batch sizes equals its numpy reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from random_models import build, inputs_for, params_for, specs
from zoo import elman

import rnnc as rc
from rnnc import t


@given(specs())
def test_random_model_rolled_equals_unrolled(s):
    m = build(s)
    rng = np.random.default_rng(s["seed"])
    inp, params = inputs_for(m, s, rng), params_for(m, rng)
    res = rc.interpret(m, inp, params)
    un = rc.interpret_unrolled(m.unroll(t=s["T"]), inp, params)
    for k, v in res.outputs.items():
        assert v.shape[-1:] == (2,) and np.all(np.isfinite(v))
        np.testing.assert_allclose(un.outputs[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
    for k, v in res.values.items():
        np.testing.assert_allclose(un.values[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
    assert un.loss == pytest.approx(res.loss, rel=1e-10, abs=1e-12)


@given(specs())
def test_random_model_schedule_has_the_drawn_scans(s):
    m = build(s)
    scans = sorted((st_.axis.name, st_.direction) for st_ in rc.schedule(m) if st_.kind == "scan")
    if s["second"] == "stacked":
        assert scans == sorted([("t", s["dir"]), ("t", s["dir2"])])
    else:
        assert scans == [("t", s["dir"])]


@given(specs())
def test_coupled_signals_recurring_in_opposite_directions_are_refused(s):
    X, H, G, d = s["X"], s["H"], s["G"], s["dir"]
    m = rc.Model("opposite")
    x = m.input("x", X)
    h, g = m.signal("h", H), m.signal("g", G)
    h[t] = rc.tanh(m.param("U", (H, X)) @ x[t] + m.param("C", (H, G)) @ g[t - d * s["tap2"]])
    g[t] = rc.tanh(m.param("Q", (G, H)) @ h[t + d * s["taps"][0]])
    with pytest.raises(rc.GraphError, match="both directions"):
        rc.schedule(m)


@given(X=st.integers(1, 4), H=st.integers(1, 5), K=st.integers(2, 4), T=st.integers(1, 6),
       B=st.integers(1, 4), lengths=st.booleans(), seed=st.integers(0, 2**16))
def test_elman_random_shapes_match_numpy(X, H, K, T, B, lengths, seed):
    case = elman(X, H, K, lengths=lengths)
    rng = np.random.default_rng(seed)
    inp = case.make_inputs(rng, T, B, np.float64)
    params = case.params(seed)
    res = rc.interpret(case.model, inp, params)
    outputs, loss = case.reference(inp, params, T, B)
    for k, v in outputs.items():
        assert res.outputs[k].shape == v.shape
        np.testing.assert_allclose(res.outputs[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
    assert res.loss == pytest.approx(loss, rel=1e-10, abs=1e-12)
