"""Optional cross-checks: Elman, LSTM and GRU gradients against PyTorch autograd and JAX (when installed).

Weight layouts are mapped explicitly: torch's ``weight_ih_l0`` stacks the gates (LSTM: i, f, g, o; GRU: r, z,
n) along rows, and its two bias vectors both enter every gate.
"""
from __future__ import annotations

import numpy as np
import pytest

import rnnc as rc
from rnnc import t

I, H, K, T, B = 3, 5, 4, 6, 2


def _readout(m, h):
    y = m.input("y", (), dtype="int")
    m.loss(rc.softmax_cross_entropy(m.param("V", (K, H)) @ h[t] + m.param("cb", K), y[t]))


def _elman():
    m = rc.Model("elman")
    x = m.input("x", I)
    h = m.signal("h", H)
    h[t] = rc.tanh(m.param("Wih", (H, I)) @ x[t] + m.param("bih", H) + m.param("Whh", (H, H)) @ h[t - 1]
                   + m.param("bhh", H))
    _readout(m, h)
    return m


def _gates(m, x, hp, names):
    """Per gate: W_ih x + b_ih and W_hh h + b_hh, kept apart (GRU needs them apart)."""
    return {g: (m.param(f"Wi{g}", (H, I)) @ x[t] + m.param(f"bi{g}", H),
                m.param(f"Wh{g}", (H, H)) @ hp + m.param(f"bh{g}", H)) for g in names}


def _lstm():
    m = rc.Model("lstm")
    x = m.input("x", I)
    h, c = m.signal("h", H), m.signal("c", H)
    p = _gates(m, x, h[t - 1], "ifgo")
    i, f, o = (rc.sigmoid(p[k][0] + p[k][1]) for k in "ifo")
    g = rc.tanh(p["g"][0] + p["g"][1])
    c[t] = f * c[t - 1] + i * g
    h[t] = o * rc.tanh(c[t])
    _readout(m, h)
    return m


def _gru():
    m = rc.Model("gru")
    x = m.input("x", I)
    h = m.signal("h", H)
    hp = h[t - 1]
    p = _gates(m, x, hp, "rzn")
    r, z = (rc.sigmoid(p[k][0] + p[k][1]) for k in "rz")
    n = rc.tanh(p["n"][0] + r * p["n"][1])
    h[t] = (1.0 - z) * n + z * hp
    _readout(m, h)
    return m


MODELS = {"rnn": (_elman, None), "lstm": (_lstm, "ifgo"), "gru": (_gru, "rzn")}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(T, B, I)), "y": rng.integers(0, K, (T, B))}


def _rnnc_grads(kind, params, data):
    m = MODELS[kind][0]()
    return rc.interpret(rc.grad(m), data, params).grads, m


def _torch_params(kind, params):
    order = MODELS[kind][1]
    if order is None:
        return {"weight_ih_l0": params["Wih"], "weight_hh_l0": params["Whh"],
                "bias_ih_l0": params["bih"], "bias_hh_l0": params["bhh"]}
    return {"weight_ih_l0": np.concatenate([params[f"Wi{g}"] for g in order]),
            "weight_hh_l0": np.concatenate([params[f"Wh{g}"] for g in order]),
            "bias_ih_l0": np.concatenate([params[f"bi{g}"] for g in order]),
            "bias_hh_l0": np.concatenate([params[f"bh{g}"] for g in order])}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_gradients_match_pytorch(kind):
    torch = pytest.importorskip("torch", reason="PyTorch is an optional peer: pip install torch==2.13.0")
    data = _data()
    m = MODELS[kind][0]()
    rng = np.random.default_rng(1)
    params = {k: rng.normal(scale=0.4, size=v.shape) for k, v in m.graph.params.items()}
    ours, _ = _rnnc_grads(kind, params, data)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    net = cls(I, H).double()
    for name, value in _torch_params(kind, params).items():
        getattr(net, name).data = torch.tensor(value)
    V = torch.tensor(params["V"], requires_grad=True)
    c = torch.tensor(params["cb"], requires_grad=True)
    out, _ = net(torch.tensor(data["x"]))
    logits = out @ V.T + c
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, K), torch.tensor(data["y"]).reshape(-1),
                                             reduction="sum") / B
    loss.backward()
    theirs = {"V": V.grad.numpy(), "cb": c.grad.numpy()}
    grads = {n: getattr(net, n).grad.numpy() for n in _torch_params(kind, params)}
    order = MODELS[kind][1]
    if order is None:
        theirs.update(Wih=grads["weight_ih_l0"], Whh=grads["weight_hh_l0"], bih=grads["bias_ih_l0"],
                      bhh=grads["bias_hh_l0"])
    else:
        for part, prefix in (("weight_ih_l0", "Wi"), ("weight_hh_l0", "Wh"), ("bias_ih_l0", "bi"),
                             ("bias_hh_l0", "bh")):
            for k, g in enumerate(order):
                theirs[prefix + g] = grads[part][k * H:(k + 1) * H]
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-9, err_msg=k)


def test_elman_gradient_matches_jax():
    jax = pytest.importorskip("jax", reason="JAX is an optional peer: pip install jax jaxlib")
    jnp = jax.numpy
    jax.config.update("jax_enable_x64", True)
    data = _data(2)
    m = _elman()
    rng = np.random.default_rng(3)
    params = {k: rng.normal(scale=0.4, size=v.shape) for k, v in m.graph.params.items()}
    ours = rc.interpret(rc.grad(m), data, params).grads

    def loss(p):
        def step(hh, xt):
            hh = jnp.tanh(xt @ p["Wih"].T + p["bih"] + hh @ p["Whh"].T + p["bhh"])
            return hh, hh
        _, hs = jax.lax.scan(step, jnp.zeros((B, H)), data["x"])
        logp = jax.nn.log_softmax(hs @ p["V"].T + p["cb"])
        return -jnp.take_along_axis(logp, data["y"][..., None], -1).sum() / B

    theirs = jax.grad(loss)({k: jnp.asarray(v) for k, v in params.items()})
    for k in params:
        np.testing.assert_allclose(ours[k], np.asarray(theirs[k]), rtol=1e-5, atol=1e-9, err_msg=k)
