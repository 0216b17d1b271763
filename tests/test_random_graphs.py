"""Random small recurrent models (hypothesis): the rolled interpreter equals the unrolled one, and Elman on
random shapes, lengths and batch sizes equals its numpy reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from zoo import elman

import rnnc as rc
from rnnc import t

ACTS = ["tanh", "sigmoid", "relu", "neg", "gate", "xmul", "softsign"]


@st.composite
def specs(draw):
    """A random model description: sizes, taps, direction, activation chain, optional second signal."""
    return {
        "X": draw(st.integers(1, 3)), "H": draw(st.integers(1, 4)), "G": draw(st.integers(1, 3)),
        "taps": sorted(draw(st.sets(st.integers(1, 3), min_size=1, max_size=3))),
        "dir": draw(st.sampled_from([1, -1])),
        "chain": draw(st.lists(st.sampled_from(ACTS), min_size=1, max_size=3)),
        "second": draw(st.sampled_from([None, "stacked", "coupled"])),
        "dir2": draw(st.sampled_from([1, -1])), "tap2": draw(st.integers(1, 2)),
        "lengths": draw(st.booleans()), "init": draw(st.booleans()),
        "loss": draw(st.sampled_from(["mse", "ce", "last"])),
        "T": draw(st.integers(1, 5)), "B": draw(st.integers(1, 3)), "seed": draw(st.integers(0, 2**16)),
    }


def _activate(kind, z, x, m, H):
    if kind == "gate":
        return rc.sigmoid(z) * z
    if kind == "xmul":
        return z * rc.tanh(m.param(f"A{len(m.params)}", (H, x.shape[0])) @ x)
    if kind == "softsign":
        return z / (1.0 + rc.sqrt(rc.square(z) + 1.0))
    return getattr(rc, kind)(z) if kind != "neg" else -z


def build(s):
    """The model a spec describes; h recurs along t in direction s["dir"] with the drawn taps."""
    X, H, G, d = s["X"], s["H"], s["G"], s["dir"]
    m = rc.Model("random")
    x = m.input("x", X, lengths=s["lengths"])
    h = m.signal("h", H)
    g = m.signal("g", G, axes=(t,)) if s["second"] else None
    z = m.param("U", (H, X)) @ x[t] + m.param("b", H)
    for k in s["taps"]:
        z = z + m.param(f"W{k}", (H, H)) @ h[t - d * k]
    if s["second"] == "coupled":
        z = z + m.param("C", (H, G)) @ g[t - d * s["tap2"]]
    for kind in s["chain"]:
        z = _activate(kind, z, x[t], m, H)
    h[t] = z
    if s["init"]:
        m.initial(h, m.param("h0", H))
    top = h
    if g is not None:
        d2 = d if s["second"] == "coupled" else s["dir2"]
        g[t] = rc.tanh(m.param("Q", (G, H)) @ h[t] + m.param("R", (G, G)) @ g[t - d2 * s["tap2"]])
        top = g
    V = m.param("V", (2, top.shape[0]))
    o = V @ top[t]
    m.output("o", o)
    if s["loss"] == "mse":
        m.loss(rc.mse(o, m.input("y", 2)[t]))
    elif s["loss"] == "ce":
        m.loss(rc.softmax_cross_entropy(o, m.input("y", (), dtype="int")[t]))
    else:
        m.output("o_last", V @ top.last(t))
        m.loss(rc.fsum(rc.square(V @ top.last(t))))
    return m


def inputs_for(m, s, rng):
    T, B = s["T"], s["B"]
    out = {"x": rng.normal(size=(T, B, s["X"]))}
    if s["lengths"]:
        out["x_lengths"] = rng.integers(1, T + 1, size=B)
    if s["loss"] == "mse":
        out["y"] = rng.normal(size=(T, B, 2))
    elif s["loss"] == "ce":
        out["y"] = rng.integers(0, 2, size=(T, B))
    return out


def _params(m, rng):
    return {k: rng.normal(scale=0.6, size=v.shape) for k, v in sorted(m.graph.params.items())}


@given(specs())
def test_random_model_rolled_equals_unrolled(s):
    m = build(s)
    rng = np.random.default_rng(s["seed"])
    inp, params = inputs_for(m, s, rng), _params(m, rng)
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
