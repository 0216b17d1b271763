"""Random small recurrent models for hypothesis tests: ``specs`` draws a description, ``build`` makes its model,
``inputs_for`` and ``params_for`` its data. The one random-model generator the tests share (the rolled and
unrolled interpreters, gradients, the CPU and CUDA backends, drawings)."""
import hypothesis.strategies as st

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
    """Random inputs for the model of spec ``s``: time-first ``(T, B, ...)``, lengths and targets as drawn."""
    T, B = s["T"], s["B"]
    out = {"x": rng.normal(size=(T, B, s["X"]))}
    if s["lengths"]:
        out["x_lengths"] = rng.integers(1, T + 1, size=B)
    if s["loss"] == "mse":
        out["y"] = rng.normal(size=(T, B, 2))
    elif s["loss"] == "ce":
        out["y"] = rng.integers(0, 2, size=(T, B))
    return out


def params_for(m, rng):
    """Random params (normal, scale 0.6) for every param of ``m``, in name order."""
    return {k: rng.normal(scale=0.6, size=v.shape) for k, v in sorted(m.graph.params.items())}
