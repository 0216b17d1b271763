"""The benchmark cells written in rnnc: Elman, LSTM and GRU with a per-step linear readout and an MSE loss.

The products on ``x[t]`` are written separately from those on ``h[t-1]`` (as in the textbooks), so the
schedule hoists ``U @ x[t]`` out of the loop and the passes merge the gate products.
"""
from __future__ import annotations

import rnnc as rc
from rnnc import t


def _io(m, I, H):
    x = m.input("x", I)
    y = m.input("y", H)
    return x, y


def elman(I: int, H: int) -> rc.Model:
    m = rc.Model("bench_elman")
    x, y = _io(m, I, H)
    U, W, b = m.param("U", (H, I)), m.param("W", (H, H)), m.param("b", H)
    h = m.signal("h", H)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + b)
    m.output("out", h[t])
    m.loss(rc.mse(h[t], y[t]))
    return m


def lstm(I: int, H: int) -> rc.Model:
    m = rc.Model("bench_lstm")
    x, y = _io(m, I, H)
    P = {g: (m.param(f"U{g}", (H, I)), m.param(f"W{g}", (H, H)), m.param(f"b{g}", H)) for g in "ifgo"}
    h, c = m.signal("h", H), m.signal("c", H)

    def pre(g):
        U, W, b = P[g]
        return U @ x[t] + W @ h[t - 1] + b
    i, f, o = rc.sigmoid(pre("i")), rc.sigmoid(pre("f")), rc.sigmoid(pre("o"))
    g = rc.tanh(pre("g"))
    c[t] = f * c[t - 1] + i * g
    h[t] = o * rc.tanh(c[t])
    m.output("out", h[t])
    m.loss(rc.mse(h[t], y[t]))
    return m


def gru(I: int, H: int) -> rc.Model:
    m = rc.Model("bench_gru")
    x, y = _io(m, I, H)
    P = {g: (m.param(f"U{g}", (H, I)), m.param(f"W{g}", (H, H)), m.param(f"b{g}", H)) for g in "zrn"}
    h = m.signal("h", H)
    z = rc.sigmoid(P["z"][0] @ x[t] + P["z"][1] @ h[t - 1] + P["z"][2])
    r = rc.sigmoid(P["r"][0] @ x[t] + P["r"][1] @ h[t - 1] + P["r"][2])
    n = rc.tanh(P["n"][0] @ x[t] + r * (P["n"][1] @ h[t - 1]) + P["n"][2])
    h[t] = (1.0 - z) * n + z * h[t - 1]
    m.output("out", h[t])
    m.loss(rc.mse(h[t], y[t]))
    return m


CELLS = {"rnn": elman, "lstm": lstm, "gru": gru}
