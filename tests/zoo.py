"""A zoo of small recurrent models, each with inputs and a hand-written numpy reference.

Every builder returns a :class:`Case`. The references are plain numpy loops over the loop axes (vectorised
over the batch only) and share nothing with rnnc, so ``interpret == reference`` checks rnnc's meaning.
Other test files (gradients, backends) reuse ``ZOO``::

    case = ZOO["elman"]()
    T, B = 4, 3
    inputs = case.make_inputs(np.random.default_rng(0), T, B, np.float64)
    params = case.params(seed=0)
    res = rc.interpret(case.model, inputs, params, sizes=case.sizes(T), batch=B)
    outputs, loss = case.reference(inputs, params, T, B)
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import rnnc as rc
from rnnc import t


@dataclass
class Case:
    """A zoo model: ``make_inputs(rng, T, B, dtype) -> dict``, ``sizes(T) -> {axis name: size}`` for every
    loop axis (pass to ``interpret(sizes=...)`` and ``m.unroll(**...)``), ``reference(inputs, params, T, B) ->
    (outputs dict, loss)`` (T: the size of the main axis)."""

    name: str
    model: rc.Model
    make_inputs: Callable
    reference: Callable
    sizes: Callable = field(default=lambda T: {"t": T})

    def params(self, seed: int = 0, scale: float = 0.5) -> dict:
        """Random float64 params (every entry nonzero, biases included, unlike the default inits)."""
        rng = np.random.default_rng(seed)
        return {k: rng.normal(scale=scale, size=v.shape) for k, v in sorted(self.model.graph.params.items())}


# ----------------------------------------------------------------------------- numpy helpers


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def softmax(z):
    return np.exp(log_softmax(z))


def ce(logits, y):
    """Per-sample cross-entropy of logits (B, K) with class indices y (B,)."""
    return -log_softmax(logits)[np.arange(len(y)), y]


def lin(W, v, b=None):
    """W @ v for each sample of v (..., N)."""
    out = v @ W.T
    return out if b is None else out + b


def mse(a, b):
    return ((a - b) ** 2).mean(-1)


def _seq(rng, T, B, n, dtype):
    return rng.normal(size=(T, B, n)).astype(dtype)


def _classes(rng, T, B, k):
    return rng.integers(0, k, size=(T, B))


def _elman_inputs(X, K, lengths):
    def make(rng, T, B, dtype):
        out = {"x": _seq(rng, T, B, X, dtype), "y": _classes(rng, T, B, K)}
        if lengths:
            out["x_lengths"] = rng.integers(1, T + 1, size=B)
        return out
    return make


# ----------------------------------------------------------------------------- models


def elman(X: int = 3, H: int = 4, K: int = 3, lengths: bool = False) -> Case:
    """h[t] = tanh(U x[t] + W h[t-1] + b); o[t] = V h[t] + c; loss CE(o[t], y[t]). With ``lengths`` the state
    holds past each sample's length, o is zero there, the loss skips those steps, and ``o_last`` reads
    ``h.last(t)`` (each sample's own last step)."""
    m = rc.Model("elman_len" if lengths else "elman")
    x = m.input("x", X, lengths=lengths)
    y = m.input("y", (), dtype="int64")
    U, W, b = m.param("U", (H, X)), m.param("W", (H, H)), m.param("b", H)
    V, c = m.param("V", (K, H)), m.param("c", K)
    h = m.signal("h", H)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + b)
    o = V @ h[t] + c
    m.output("o", o)
    if lengths:
        m.output("o_last", V @ h.last(t) + c)
    m.loss(rc.softmax_cross_entropy(o, y[t]))

    def reference(inp, p, T, B):
        xs, ys = inp["x"], inp["y"]
        lens = inp.get("x_lengths", np.full(B, T))
        hs, os_, loss = np.zeros((T, B, H)), np.zeros((T, B, K)), 0.0
        prev = np.zeros((B, H))
        for k in range(T):
            new = np.tanh(lin(p["U"], xs[k], p["b"]) + lin(p["W"], prev))
            live = (k < lens)[:, None]
            prev = np.where(live, new, prev)
            hs[k] = prev
            o_k = lin(p["V"], prev, p["c"])
            os_[k] = np.where(live, o_k, 0.0)
            loss += (ce(o_k, ys[k]) * live[:, 0]).sum()
        out = {"o": os_}
        if lengths:
            out["o_last"] = lin(p["V"], hs[lens - 1, np.arange(B)], p["c"])
        return out, loss / B

    return Case(m.name, m, _elman_inputs(X, K, lengths), reference)


def jordan(X=3, H=4, K=2) -> Case:
    """Jordan network: the output feeds the next hidden state. h[t] = tanh(U x[t] + W yh[t-1] + b),
    yh[t] = sigmoid(V h[t] + c); loss mse(yh[t], y[t])."""
    m = rc.Model("jordan")
    x, y = m.input("x", X), m.input("y", K)
    U, W, b = m.param("U", (H, X)), m.param("W", (H, K)), m.param("b", H)
    V, c = m.param("V", (K, H)), m.param("c", K)
    h, yh = m.signal("h", H), m.signal("yh", K)
    h[t] = rc.tanh(U @ x[t] + W @ yh[t - 1] + b)
    yh[t] = rc.sigmoid(V @ h[t] + c)
    m.output("out", yh[t])
    m.loss(rc.mse(yh[t], y[t]))

    def reference(inp, p, T, B):
        xs, ys = inp["x"], inp["y"]
        out, prev, loss = np.zeros((T, B, K)), np.zeros((B, K)), 0.0
        for k in range(T):
            hk = np.tanh(lin(p["U"], xs[k], p["b"]) + lin(p["W"], prev))
            prev = sigmoid(lin(p["V"], hk, p["c"]))
            out[k] = prev
            loss += mse(prev, ys[k]).sum()
        return {"out": out}, loss / B

    return Case(m.name, m, lambda rng, T, B, dt: {"x": _seq(rng, T, B, X, dt), "y": _seq(rng, T, B, K, dt)},
                reference)


def many_to_one(X=3, H=4, K=3) -> Case:
    """Sequence classification: loss CE(V h.last(t) + c, y) with one class per sample."""
    m = rc.Model("many_to_one")
    x = m.input("x", X)
    y = m.input("y", (), dtype="int", axes=())
    U, W, b = m.param("U", (H, X)), m.param("W", (H, H)), m.param("b", H)
    V, c = m.param("V", (K, H)), m.param("c", K)
    h = m.signal("h", H)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + b)
    logits = V @ h.last(t) + c
    m.output("logits", logits)
    m.loss(rc.softmax_cross_entropy(logits, y))

    def reference(inp, p, T, B):
        xs = inp["x"]
        hk = np.zeros((B, H))
        for k in range(T):
            hk = np.tanh(lin(p["U"], xs[k], p["b"]) + lin(p["W"], hk))
        logits = lin(p["V"], hk, p["c"])
        return {"logits": logits}, ce(logits, inp["y"]).mean()

    return Case(m.name, m, lambda rng, T, B, dt: {"x": _seq(rng, T, B, X, dt), "y": rng.integers(0, K, B)},
                reference)


def autonomous(H=3) -> Case:
    """h[t] = tanh(W h[t-1] + b) from a learned initial state h0; no inputs (interpret with sizes and batch)."""
    m = rc.Model("autonomous")
    W, b, h0 = m.param("W", (H, H)), m.param("b", H), m.param("h0", H)
    h = m.signal("h", H)
    h[t] = rc.tanh(W @ h[t - 1] + b)
    m.initial(h, h0)
    m.output("state", h[t])
    m.loss(rc.fsum(rc.square(h[t])))

    def reference(inp, p, T, B):
        out, hk = np.zeros((T, B, H)), np.broadcast_to(p["h0"], (B, H))
        for k in range(T):
            hk = np.tanh(lin(p["W"], hk, p["b"]))
            out[k] = hk
        return {"state": out}, (out ** 2).sum() / B

    return Case(m.name, m, lambda rng, T, B, dt: {}, reference)


def two_tap(X=2, H=3, K=2) -> Case:
    """h[t] = tanh(U x[t] + W1 h[t-1] + W2 h[t-2] + b); loss mse(V h[t] + c, y[t])."""
    m = rc.Model("two_tap")
    x, y = m.input("x", X), m.input("y", K)
    U, W1, W2 = m.param("U", (H, X)), m.param("W1", (H, H)), m.param("W2", (H, H))
    b, V, c = m.param("b", H), m.param("V", (K, H)), m.param("c", K)
    h = m.signal("h", H)
    h[t] = rc.tanh(U @ x[t] + W1 @ h[t - 1] + W2 @ h[t - 2] + b)
    o = V @ h[t] + c
    m.output("o", o)
    m.loss(rc.mse(o, y[t]))

    def reference(inp, p, T, B):
        xs, ys = inp["x"], inp["y"]
        hs = np.zeros((T + 2, B, H))          # hs[k + 2] = h[k]; hs[0], hs[1] are the zero initial values
        out, loss = np.zeros((T, B, K)), 0.0
        for k in range(T):
            hs[k + 2] = np.tanh(lin(p["U"], xs[k], p["b"]) + lin(p["W1"], hs[k + 1]) + lin(p["W2"], hs[k]))
            out[k] = lin(p["V"], hs[k + 2], p["c"])
            loss += mse(out[k], ys[k]).sum()
        return {"o": out}, loss / B

    return Case(m.name, m, lambda rng, T, B, dt: {"x": _seq(rng, T, B, X, dt), "y": _seq(rng, T, B, K, dt)},
                reference)


def deep_transition(X=3, H=4, Z=5, K=3) -> Case:
    """A deep transition: z = relu(W1 h[t-1] + U x[t] + b1); h[t] = tanh(W2 z + b2)."""
    m = rc.Model("deep_transition")
    x, y = m.input("x", X), m.input("y", (), dtype="int")
    W1, U, b1 = m.param("W1", (Z, H)), m.param("U", (Z, X)), m.param("b1", Z)
    W2, b2 = m.param("W2", (H, Z)), m.param("b2", H)
    V, c = m.param("V", (K, H)), m.param("c", K)
    h = m.signal("h", H)
    z = rc.relu(W1 @ h[t - 1] + U @ x[t] + b1)
    h[t] = rc.tanh(W2 @ z + b2)
    o = V @ h[t] + c
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))

    def reference(inp, p, T, B):
        xs, ys = inp["x"], inp["y"]
        hk, out, loss = np.zeros((B, H)), np.zeros((T, B, K)), 0.0
        for k in range(T):
            zk = np.maximum(lin(p["W1"], hk) + lin(p["U"], xs[k], p["b1"]), 0.0)
            hk = np.tanh(lin(p["W2"], zk, p["b2"]))
            out[k] = lin(p["V"], hk, p["c"])
            loss += ce(out[k], ys[k]).sum()
        return {"o": out}, loss / B

    return Case(m.name, m, _elman_inputs(X, K, False), reference)


def deep_output(X=3, H=4, Z=5, K=3) -> Case:
    """Elman state with a two-layer output: o = V2 tanh(V1 h[t] + c1) + c2."""
    m = rc.Model("deep_output")
    x, y = m.input("x", X), m.input("y", (), dtype="int")
    U, W, b = m.param("U", (H, X)), m.param("W", (H, H)), m.param("b", H)
    V1, c1, V2, c2 = m.param("V1", (Z, H)), m.param("c1", Z), m.param("V2", (K, Z)), m.param("c2", K)
    h = m.signal("h", H)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + b)
    o = V2 @ rc.tanh(V1 @ h[t] + c1) + c2
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))

    def reference(inp, p, T, B):
        xs, ys = inp["x"], inp["y"]
        hk, out, loss = np.zeros((B, H)), np.zeros((T, B, K)), 0.0
        for k in range(T):
            hk = np.tanh(lin(p["U"], xs[k], p["b"]) + lin(p["W"], hk))
            out[k] = lin(p["V2"], np.tanh(lin(p["V1"], hk, p["c1"])), p["c2"])
            loss += ce(out[k], ys[k]).sum()
        return {"o": out}, loss / B

    return Case(m.name, m, _elman_inputs(X, K, False), reference)


def stack2(X=3, H1=4, H2=3, K=2) -> Case:
    """Two stacked Elman layers: h2 reads h1 at the same step."""
    m = rc.Model("stack2")
    x, y = m.input("x", X), m.input("y", (), dtype="int")
    U1, W1, b1 = m.param("U1", (H1, X)), m.param("W1", (H1, H1)), m.param("b1", H1)
    U2, W2, b2 = m.param("U2", (H2, H1)), m.param("W2", (H2, H2)), m.param("b2", H2)
    V, c = m.param("V", (K, H2)), m.param("c", K)
    h1, h2 = m.signal("h1", H1), m.signal("h2", H2)
    h1[t] = rc.tanh(U1 @ x[t] + W1 @ h1[t - 1] + b1)
    h2[t] = rc.tanh(U2 @ h1[t] + W2 @ h2[t - 1] + b2)
    o = V @ h2[t] + c
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))

    def reference(inp, p, T, B):
        xs, ys = inp["x"], inp["y"]
        a, z, out, loss = np.zeros((B, H1)), np.zeros((B, H2)), np.zeros((T, B, K)), 0.0
        for k in range(T):
            a = np.tanh(lin(p["U1"], xs[k], p["b1"]) + lin(p["W1"], a))
            z = np.tanh(lin(p["U2"], a, p["b2"]) + lin(p["W2"], z))
            out[k] = lin(p["V"], z, p["c"])
            loss += ce(out[k], ys[k]).sum()
        return {"o": out}, loss / B

    return Case(m.name, m, _elman_inputs(X, K, False), reference)


def lstm(X=3, H=4, K=3) -> Case:
    """The lecture's LSTM: gates f, i, o = sigmoid(W [h[t-1], x[t]] + b), candidate tanh(W_C [...] + b_C),
    C[t] = f * C[t-1] + i * C~, h[t] = o * tanh(C[t])."""
    m = rc.Model("lstm")
    x, y = m.input("x", X), m.input("y", (), dtype="int")
    P = {g: (m.param(f"W{g}", (H, H + X)), m.param(f"b{g}", H)) for g in ("f", "i", "C", "o")}
    V, c = m.param("V", (K, H)), m.param("c", K)
    C, h = m.signal("C", H), m.signal("h", H)
    hx = rc.concat([h[t - 1], x[t]])
    f = rc.sigmoid(P["f"][0] @ hx + P["f"][1])
    i = rc.sigmoid(P["i"][0] @ hx + P["i"][1])
    cand = rc.tanh(P["C"][0] @ hx + P["C"][1])
    C[t] = f * C[t - 1] + i * cand
    o_gate = rc.sigmoid(P["o"][0] @ hx + P["o"][1])
    h[t] = o_gate * rc.tanh(C[t])
    o = V @ h[t] + c
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))

    def reference(inp, p, T, B):
        xs, ys = inp["x"], inp["y"]
        hk, Ck, out, loss = np.zeros((B, H)), np.zeros((B, H)), np.zeros((T, B, K)), 0.0
        for k in range(T):
            hx_k = np.concatenate([hk, xs[k]], -1)
            f_k = sigmoid(lin(p["Wf"], hx_k, p["bf"]))
            i_k = sigmoid(lin(p["Wi"], hx_k, p["bi"]))
            Ck = f_k * Ck + i_k * np.tanh(lin(p["WC"], hx_k, p["bC"]))
            hk = sigmoid(lin(p["Wo"], hx_k, p["bo"])) * np.tanh(Ck)
            out[k] = lin(p["V"], hk, p["c"])
            loss += ce(out[k], ys[k]).sum()
        return {"o": out}, loss / B

    return Case(m.name, m, _elman_inputs(X, K, False), reference)


def gru(X=3, H=4, K=3) -> Case:
    """The lecture's GRU: z = sigmoid(Wz [h[t-1], x]), r = sigmoid(Wr [h[t-1], x]),
    h~ = tanh(W [r * h[t-1], x]), h[t] = (1 - z) * h[t-1] + z * h~."""
    m = rc.Model("gru")
    x, y = m.input("x", X), m.input("y", (), dtype="int")
    Wz, Wr, Wh = m.param("Wz", (H, H + X)), m.param("Wr", (H, H + X)), m.param("Wh", (H, H + X))
    V, c = m.param("V", (K, H)), m.param("c", K)
    h = m.signal("h", H)
    hx = rc.concat([h[t - 1], x[t]])
    z = rc.sigmoid(Wz @ hx)
    r = rc.sigmoid(Wr @ hx)
    cand = rc.tanh(Wh @ rc.concat([r * h[t - 1], x[t]]))
    h[t] = (1.0 - z) * h[t - 1] + z * cand
    o = V @ h[t] + c
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))

    def reference(inp, p, T, B):
        xs, ys = inp["x"], inp["y"]
        hk, out, loss = np.zeros((B, H)), np.zeros((T, B, K)), 0.0
        for k in range(T):
            hx_k = np.concatenate([hk, xs[k]], -1)
            z_k, r_k = sigmoid(lin(p["Wz"], hx_k)), sigmoid(lin(p["Wr"], hx_k))
            cand_k = np.tanh(lin(p["Wh"], np.concatenate([r_k * hk, xs[k]], -1)))
            hk = (1 - z_k) * hk + z_k * cand_k
            out[k] = lin(p["V"], hk, p["c"])
            loss += ce(out[k], ys[k]).sum()
        return {"o": out}, loss / B

    return Case(m.name, m, _elman_inputs(X, K, False), reference)


def bidirectional(X=3, H=3, K=2, lengths: bool = False) -> Case:
    """f[t] reads f[t-1] (forward), r[t] reads r[t+1] (reverse); o = V [f[t], r[t]] + c. (The reference
    ignores ``lengths``; with lengths, test against truncated sequences instead.)"""
    m = rc.Model("bidirectional")
    x, y = m.input("x", X, lengths=lengths), m.input("y", (), dtype="int")
    Uf, Wf, bf = m.param("Uf", (H, X)), m.param("Wf", (H, H)), m.param("bf", H)
    Ur, Wr, br = m.param("Ur", (H, X)), m.param("Wr", (H, H)), m.param("br", H)
    V, c = m.param("V", (K, 2 * H)), m.param("c", K)
    f, r = m.signal("f", H), m.signal("r", H)
    f[t] = rc.tanh(Uf @ x[t] + Wf @ f[t - 1] + bf)
    r[t] = rc.tanh(Ur @ x[t] + Wr @ r[t + 1] + br)
    o = V @ rc.concat([f[t], r[t]]) + c
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))

    def reference(inp, p, T, B):
        xs, ys = inp["x"], inp["y"]
        fs, rs = np.zeros((T, B, H)), np.zeros((T, B, H))
        prev = np.zeros((B, H))
        for k in range(T):
            prev = fs[k] = np.tanh(lin(p["Uf"], xs[k], p["bf"]) + lin(p["Wf"], prev))
        prev = np.zeros((B, H))
        for k in reversed(range(T)):
            prev = rs[k] = np.tanh(lin(p["Ur"], xs[k], p["br"]) + lin(p["Wr"], prev))
        out = lin(p["V"], np.concatenate([fs, rs], -1), p["c"])
        loss = sum(ce(out[k], ys[k]).sum() for k in range(T))
        return {"o": out}, loss / B

    return Case(m.name, m, _elman_inputs(X, K, lengths), reference)


def encoder_decoder(X=3, H=4, Y=2, K=3) -> Case:
    """Encoder h over t; decoder d over its own axis u, starting from h.last(t):
    d[u] = tanh(Ud prev[u] + Wd d[u-1] + bd), m.initial(d, h.last(t)); loss CE(V d[u] + c, z[u])."""
    (u,) = rc.axes("u")
    m = rc.Model("encoder_decoder")
    x = m.input("x", X)
    prev = m.input("prev", Y, axes=(u,))
    z = m.input("z", (), dtype="int", axes=(u,))
    U, W, b = m.param("U", (H, X)), m.param("W", (H, H)), m.param("b", H)
    Ud, Wd, bd = m.param("Ud", (H, Y)), m.param("Wd", (H, H)), m.param("bd", H)
    V, c = m.param("V", (K, H)), m.param("c", K)
    h, d = m.signal("h", H), m.signal("d", H)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + b)
    d[u] = rc.tanh(Ud @ prev[u] + Wd @ d[u - 1] + bd)
    m.initial(d, h.last(t))
    o = V @ d[u] + c
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, z[u]))

    def reference(inp, p, T, B):
        xs, ps, zs = inp["x"], inp["prev"], inp["z"]
        hk = np.zeros((B, H))
        for k in range(T):
            hk = np.tanh(lin(p["U"], xs[k], p["b"]) + lin(p["W"], hk))
        dk, out, loss = hk, np.zeros((ps.shape[0], B, K)), 0.0
        for k in range(ps.shape[0]):
            dk = np.tanh(lin(p["Ud"], ps[k], p["bd"]) + lin(p["Wd"], dk))
            out[k] = lin(p["V"], dk, p["c"])
            loss += ce(out[k], zs[k]).sum()
        return {"o": out}, loss / B

    def make(rng, T, B, dt):
        n = T + 1
        return {"x": _seq(rng, T, B, X, dt), "prev": _seq(rng, n, B, Y, dt), "z": _classes(rng, n, B, K)}

    return Case(m.name, m, make, reference, lambda T: {"t": T, "u": T + 1})


def renet(C=2, H=3, G=2) -> Case:
    """ReNet block on an (i, j) grid: scan i down and up, concat, scan j right and left, concat."""
    i, j = rc.axes("i", "j")
    m = rc.Model("renet")
    x = m.input("x", C, axes=(i, j))
    y = m.input("y", 2 * G, axes=(i, j))
    P = {}
    for k, (n_in, n_out) in enumerate([(C, H), (C, H), (2 * H, G), (2 * H, G)], 1):
        P[k] = (m.param(f"U{k}", (n_out, n_in)), m.param(f"W{k}", (n_out, n_out)), m.param(f"b{k}", n_out))
    down, up = m.signal("down", H), m.signal("up", H)
    right, left = m.signal("right", G), m.signal("left", G)
    down[i, j] = rc.tanh(P[1][0] @ x[i, j] + P[1][1] @ down[i - 1, j] + P[1][2])
    up[i, j] = rc.tanh(P[2][0] @ x[i, j] + P[2][1] @ up[i + 1, j] + P[2][2])
    v = rc.concat([down[i, j], up[i, j]])
    right[i, j] = rc.tanh(P[3][0] @ v + P[3][1] @ right[i, j - 1] + P[3][2])
    left[i, j] = rc.tanh(P[4][0] @ v + P[4][1] @ left[i, j + 1] + P[4][2])
    out = rc.concat([right[i, j], left[i, j]])
    m.output("out", out)
    m.loss(rc.mse(out, y[i, j]))

    def scan(inp, k, axis, reverse, n_out, p):
        U, W, b = p[f"U{k}"], p[f"W{k}"], p[f"b{k}"]
        res = np.zeros(inp.shape[:-1] + (n_out,))
        steps = range(inp.shape[axis])
        prev = None
        for s in (reversed(steps) if reverse else steps):
            xs = np.take(inp, s, axis=axis)
            pre = lin(U, xs, b) + (lin(W, prev) if prev is not None else 0.0)
            prev = np.tanh(pre)
            if axis == 0:
                res[s] = prev
            else:
                res[:, s] = prev
        return res

    def reference(inp, p, T, B):
        xs = inp["x"]
        v_ = np.concatenate([scan(xs, 1, 0, False, H, p), scan(xs, 2, 0, True, H, p)], -1)
        out_ = np.concatenate([scan(v_, 3, 1, False, G, p), scan(v_, 4, 1, True, G, p)], -1)
        return {"out": out_}, mse(out_, inp["y"]).sum() / xs.shape[2]

    def make(rng, T, B, dt):
        return {"x": rng.normal(size=(T, T + 1, B, C)).astype(dt),
                "y": rng.normal(size=(T, T + 1, B, 2 * G)).astype(dt)}

    return Case(m.name, m, make, reference, lambda T: {"i": T, "j": T + 1})


def variable_length(X=3, H=4, K=3) -> Case:
    """Elman on a batch of different lengths (``x_lengths``), with a per-step loss and ``h.last(t)``."""
    return elman(X, H, K, lengths=True)


def ops_mix(X=3, H=4, K=3) -> Case:
    """Exercises softmax, log_softmax, concat, split, feature slices, where, mse, binary_cross_entropy,
    fsum/fmean, and sum/mean/last/first over an axis (an axis-free mean feeding a second recurrence)."""
    m = rc.Model("ops_mix")
    x, mask = m.input("x", X), m.input("mask", H)
    ybin, tgt = m.input("ybin", 2), m.input("tgt", K)
    zz = m.input("zz", H, axes=())
    U, W, b = m.param("U", (H, X)), m.param("W", (H, H)), m.param("b", H)
    Q, R = m.param("Q", (H, H)), m.param("R", (H, H))
    V, c = m.param("V", (K, H)), m.param("c", K)
    h, g = m.signal("h", H), m.signal("g", H)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + b)
    hm = rc.mean(h, t)
    g[t] = rc.where(mask[t], rc.tanh(Q @ hm + R @ g[t - 1]), -0.5 * g[t - 1])
    logits = V @ g[t] + c
    p, lp = rc.softmax(logits), rc.log_softmax(logits)
    a = rc.concat([p, h[t]])
    s = a[1:3]
    first, rest = rc.split(a, [K, H])
    m.output("p", p)
    m.output("s", s)
    m.output("rest", rest)
    m.output("hsum", rc.sum(h, t))
    m.output("g_ends", rc.concat([g.first(t), rc.last(g, t)]))
    m.output("first_sum", rc.fsum(first, -1))
    m.loss(rc.mse(s, ybin[t]))
    m.loss(rc.binary_cross_entropy(rc.sigmoid(s), ybin[t]))
    m.loss(-rc.fsum(lp * tgt[t]))
    m.loss(rc.mse(hm, zz))
    m.loss(rc.fmean(rc.square(g[t])))

    def reference(inp, p_, T, B):
        xs, ms = inp["x"], inp["mask"]
        hs, gs = np.zeros((T, B, H)), np.zeros((T, B, H))
        prev = np.zeros((B, H))
        for k in range(T):
            prev = hs[k] = np.tanh(lin(p_["U"], xs[k], p_["b"]) + lin(p_["W"], prev))
        hm_ = hs.mean(0)
        prev = np.zeros((B, H))
        for k in range(T):
            prev = gs[k] = np.where(ms[k] != 0, np.tanh(lin(p_["Q"], hm_) + lin(p_["R"], prev)), -0.5 * prev)
        lg = lin(p_["V"], gs, p_["c"])
        a_ = np.concatenate([softmax(lg), hs], -1)
        s_ = a_[..., 1:3]
        yb = inp["ybin"]
        sg = sigmoid(s_)
        bce = -(yb * np.log(sg) + (1 - yb) * np.log(1 - sg)).sum(-1)
        loss = (mse(s_, yb) + bce - (log_softmax(lg) * inp["tgt"]).sum(-1) + (gs ** 2).mean(-1)).sum()
        loss += mse(hm_, inp["zz"]).sum()
        out = {"p": softmax(lg), "s": s_, "rest": a_[..., K:], "hsum": hs.sum(0),
               "g_ends": np.concatenate([gs[0], gs[-1]], -1), "first_sum": a_[..., :K].sum(-1)}
        return out, loss / B

    def make(rng, T, B, dt):
        tg = rng.random((T, B, K))
        return {"x": _seq(rng, T, B, X, dt), "mask": (rng.random((T, B, H)) < 0.6).astype(dt),
                "ybin": rng.random((T, B, 2)).astype(dt), "tgt": (tg / tg.sum(-1, keepdims=True)).astype(dt),
                "zz": rng.normal(size=(B, H)).astype(dt)}

    return Case(m.name, m, make, reference)


def _shared(builder: Callable[..., Case]) -> Callable[..., Case]:
    """``builder`` built once per process and arguments: ``ZOO[name]()`` is one model object for every test, so
    the tests that compile it share its compiled object's kernels instead of building, keying and loading each
    instance again. Zoo models are never changed after they are built."""
    built: dict = {}

    @functools.wraps(builder)
    def shared(*args, **kwargs) -> Case:
        key = (args, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = builder(*args, **kwargs)
        return built[key]
    return shared


ZOO: dict[str, Callable[..., Case]] = {name: _shared(builder) for name, builder in {
    "elman": elman, "jordan": jordan, "many_to_one": many_to_one, "autonomous": autonomous,
    "two_tap": two_tap, "deep_transition": deep_transition, "deep_output": deep_output, "stack2": stack2,
    "lstm": lstm, "gru": gru, "bidirectional": bidirectional, "encoder_decoder": encoder_decoder,
    "renet": renet, "variable_length": variable_length, "ops_mix": ops_mix,
}.items()}
