"""The recurrent layer family on a toy sequence task: Elman, Jordan, LSTM (peephole), GRU, bidirectional,
stacked, deep transition / deep output, each trained a few steps with rc.grad + Adam.

Run: python examples/layers_recurrent.py
"""
import numpy as np

import rnnc as rc
import rnnc.nn as nn
from rnnc.train import Adam

rng = np.random.default_rng(0)
T, B, D = 6, 16, 3
X = rng.standard_normal((T, B, D))
Y = (np.cumsum(X[..., 0], 0) > 0).astype(int)   # the sign of a running sum: needs memory

layers = {
    "elman": nn.Elman(8),
    "jordan": nn.Jordan(8, 4),
    "lstm_peephole": nn.LSTM(8, peephole=True),
    "gru": nn.GRU(8),
    "bidirectional_gru": nn.Bidirectional(nn.GRUCell(4)),
    "stack": nn.Stack([nn.LSTM(6), nn.Elman(6)]),
    "deep_elman": nn.Elman(8, transition=1, deep_output=(8,)),
}
for name, layer in layers.items():
    net = nn.Network(rc.Model(name))
    m = net.model
    x = m.input("x", D)
    y = m.input("y", (), dtype="int")
    logits = nn.Dense(2)(net, layer(net, x))
    m.loss(rc.softmax_cross_entropy(logits, y[rc.t]))
    params, opt, gm = m.init_params(0, "float64"), Adam(0.05), rc.grad(m)
    first = None
    for _ in range(30):
        res = rc.interpret(gm, {"x": X, "y": Y}, params)
        first = first if first is not None else res.loss
        opt.step(params, res.grads)
    print(f"{name:>18}: loss {first:.3f} -> {res.loss:.3f}  ({sum(p.size for p in params.values())} params)")
