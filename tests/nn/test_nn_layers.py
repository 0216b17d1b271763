"""rnnc.nn layers: forward against hand-written numpy, gradients by finite differences (float64)."""
import dataclasses

import numpy as np
import pytest

import rnnc as rc
import rnnc.nn as nn
from rnnc.errors import ShapeError

RNG = np.random.default_rng(0)


def sig(x):
    return 1 / (1 + np.exp(-x))


def run(build, inputs, seed=0, train=True):
    """Build a model with ``build(net, **input nodes)`` -> output; return (outputs, params)."""
    net = nn.Network(rc.Model("t"), train=train)
    nodes = {k: net.model.input(k, a.shape[len(ax) + 1:], axes=ax) for k, (a, ax) in inputs.items()}
    net.model.output("y", build(net, **nodes))
    p = net.model.init_params(seed, "float64")
    p = {k: RNG.standard_normal(v.shape) * 0.5 for k, v in p.items()}
    p = {k: np.abs(v) + 0.5 if "running_var" in k else v for k, v in p.items()}
    res = rc.interpret(net.model, {k: a for k, (a, _) in inputs.items()}, p, dtype="float64")
    return res.outputs["y"], p, net


def seq(T=4, B=3, D=2):
    return RNG.standard_normal((T, B, D)), (rc.t,)


def scan(step, x, h0, reverse=False):
    T = x.shape[0]
    out, h = [None] * T, h0
    for k in (range(T - 1, -1, -1) if reverse else range(T)):
        h = step(x[k], h)
        out[k] = h
    return out


def test_dense_conv_flatten_softmax_normalizer():
    x = RNG.standard_normal((3, 2, 5, 5))
    y, p, _ = run(lambda net, x: nn.Sequential([nn.Normalizer(2.0), nn.Conv2d(3, 3, padding=1, activation="relu"),
                                                nn.Flatten(), nn.Dense(4, activation="tanh"), nn.Softmax()])(net, x),
                  {"x": (x, ())})
    from image_cases import conv_loops
    h = np.maximum(conv_loops(x / 2.0, p["conv1_W"], (1, 1), (1, 1), (1, 1)) + p["conv1_b"][:, None, None], 0)
    z = np.tanh(h.reshape(3, -1) @ p["dense1_W"].T + p["dense1_b"])
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(-1, keepdims=True), atol=1e-12)


def test_batchnorm_train_and_eval():
    x = RNG.standard_normal((6, 3, 2, 2))
    y, p, net = run(lambda net, x: nn.BatchNorm()(net, x), {"x": (x, ())})
    mu, var = x.mean((0, 2, 3), keepdims=True), x.var((0, 2, 3), keepdims=True)
    ref = (x - mu) / np.sqrt(var + 1e-5) * p["bn1_gamma"][:, None, None] + p["bn1_beta"][:, None, None]
    np.testing.assert_allclose(y, ref, atol=1e-12)
    assert set(net.buffers) == {"bn1_running_mean", "bn1_running_var"}
    y, p, net = run(lambda net, x: nn.BatchNorm()(net, x), {"x": (x, ())}, train=False)
    ref = ((x - p["bn1_running_mean"][:, None, None]) / np.sqrt(p["bn1_running_var"][:, None, None] + 1e-5)
           * p["bn1_gamma"][:, None, None] + p["bn1_beta"][:, None, None])
    np.testing.assert_allclose(y, ref, atol=1e-12)


def test_dropout_mask_input_and_eval_identity():
    x = RNG.standard_normal((4, 5))
    net = nn.Network(rc.Model("d"))
    xn = net.model.input("x", 5, axes=())
    net.model.output("y", nn.Dropout(0.5)(net, xn))
    assert net.noise == {"dropout1_mask": 0.5}
    mask = (RNG.random((4, 5)) > 0.5) * 2.0
    y = rc.interpret(net.model, {"x": x, "dropout1_mask": mask}, {}, dtype="float64").outputs["y"]
    np.testing.assert_allclose(y, x * mask)
    y, _, _ = run(lambda net, x: nn.Dropout(0.5)(net, x), {"x": (x, ())}, train=False)
    np.testing.assert_allclose(y, x)


def test_pooling_layers():
    x = RNG.standard_normal((2, 3, 4, 4))
    y, _, _ = run(lambda net, x: nn.AvgPool2d("all")(net, nn.MaxPool2d(2)(net, x)), {"x": (x, ())})
    ref = x.reshape(2, 3, 2, 2, 2, 2).max((3, 5)).mean((2, 3))[:, :, None, None]
    np.testing.assert_allclose(y, ref)


def test_elman_and_deep_options():
    x, ax = seq()
    y, p, _ = run(lambda net, x: nn.Elman(3, transition=1, deep_output=(2,))(net, x), {"x": (x, ax)})

    def step(xt, h):
        h = np.tanh(xt @ p["rnn1_U"].T + h @ p["rnn1_W"].T + p["rnn1_b"])
        return np.tanh(h @ p["rnn1_T1"].T + p["rnn1_Tb1"])
    hs = np.stack(scan(step, x, np.zeros((3, 3))))
    np.testing.assert_allclose(y, np.tanh(hs @ p["rnn1_D1"].T + p["rnn1_Db1"]), atol=1e-12)


def test_jordan():
    x, ax = seq()
    y, p, _ = run(lambda net, x: nn.Jordan(4, 2)(net, x), {"x": (x, ax)})

    def step(xt, yp):
        h = np.tanh(xt @ p["rnn1_U"].T + yp @ p["rnn1_W"].T + p["rnn1_b"])
        return np.tanh(h @ p["rnn1_V"].T + p["rnn1_c"])
    np.testing.assert_allclose(y, np.stack(scan(step, x, np.zeros((3, 2)))), atol=1e-12)


def lstm_ref(x, p, name, H, peephole=False, coupled=False, reverse=False):
    def step(xt, state):
        h, c = state
        z = xt @ p[f"{name}_U"].T + h @ p[f"{name}_W"].T + p[f"{name}_b"]
        if coupled:                                     # no forget-gate rows: the stacks hold i, g, o
            (zi, zg, zo), zf = np.split(z, 3, -1), None
        else:
            zi, zf, zg, zo = np.split(z, 4, -1)
        if peephole:
            zi = zi + p[f"{name}_pi"] * c
            zf = None if coupled else zf + p[f"{name}_pf"] * c
        i = sig(zi)
        f = 1 - i if coupled else sig(zf)
        c = f * c + i * np.tanh(zg)
        o = sig(zo + (p[f"{name}_po"] * c if peephole else 0))
        return o * np.tanh(c), c
    out = scan(step, x, (np.zeros((x.shape[1], H)), np.zeros((x.shape[1], H))), reverse)
    return np.stack([h for h, _ in out])


@pytest.mark.parametrize("peephole,coupled", [(False, False), (True, False), (False, True), (True, True)])
def test_lstm(peephole, coupled):
    x, ax = seq()
    y, p, _ = run(lambda net, x: nn.LSTM(3, peephole=peephole, coupled=coupled)(net, x), {"x": (x, ax)})
    np.testing.assert_allclose(y, lstm_ref(x, p, "rnn1", 3, peephole, coupled), atol=1e-12)


def gru_ref(x, p, name, H, reverse=False):
    def step(xt, h):
        xr, xz, xn = np.split(xt @ p[f"{name}_U"].T + p[f"{name}_bx"], 3, -1)
        hr, hz, hn = np.split(h @ p[f"{name}_W"].T + p[f"{name}_bh"], 3, -1)
        r, z = sig(xr + hr), sig(xz + hz)
        return (1 - z) * np.tanh(xn + r * hn) + z * h
    return np.stack(scan(step, x, np.zeros((x.shape[1], H)), reverse))


def test_bidirectional_gru_stack():
    x, ax = seq()
    y, p, _ = run(lambda net, x: nn.Stack([nn.Bidirectional(nn.GRUCell(3)), nn.LSTM(2)])(net, x), {"x": (x, ax)})
    h = np.concatenate([gru_ref(x, p, "rnn1", 3), gru_ref(x, p, "rnn2", 3, reverse=True)], -1)
    np.testing.assert_allclose(y, lstm_ref(h, p, "rnn3", 2), atol=1e-12)


def test_learned_initial_state():
    x, ax = seq()
    y, p, _ = run(lambda net, x: nn.Elman(3, initial="learned")(net, x), {"x": (x, ax)})
    h0 = np.broadcast_to(p["rnn1_init0"], (3, 3))
    ref = scan(lambda xt, h: np.tanh(xt @ p["rnn1_U"].T + h @ p["rnn1_W"].T + p["rnn1_b"]), x, h0)
    np.testing.assert_allclose(y, np.stack(ref), atol=1e-12)


class ScaledTanhCell(nn.Cell):
    """A user cell: h = tanh(a * (U x + W h_prev))."""

    hidden = 3

    def declare(self, net, name, input_size):
        return {"U": net.param(f"{name}_U", (3, input_size)), "W": net.param(f"{name}_W", (3, 3)),
                "a": net.param(f"{name}_a", (), 1.0)}

    def step(self, p, x, prev):
        return (rc.tanh(p["a"] * (p["U"] @ x + p["W"] @ prev[0])),)


def test_user_cell_in_bidirectional():
    x, ax = seq()
    y, p, _ = run(lambda net, x: nn.Bidirectional(ScaledTanhCell())(net, x), {"x": (x, ax)})

    def ref(name, reverse):
        return np.stack(scan(lambda xt, h: np.tanh(p[f"{name}_a"] * (xt @ p[f"{name}_U"].T + h @ p[f"{name}_W"].T)),
                             x, np.zeros((3, 3)), reverse))
    np.testing.assert_allclose(y, np.concatenate([ref("rnn1", False), ref("rnn2", True)], -1), atol=1e-12)


def spatial_ref(x, p, block, U):
    """ReNet block by plain loops: vertical bi-sweep over patch rows, then horizontal over columns."""
    B, C, H, W = x.shape
    ph, pw = block
    I, J = H // ph, W // pw
    patches = x.reshape(B, C, I, ph, J, pw).transpose(2, 4, 0, 1, 3, 5).reshape(I, J, B, -1)

    def sweep(inp, name, axis, reverse):
        n = inp.shape[axis]
        out = np.zeros(inp.shape[:3] + (U,))
        h = np.zeros((inp.shape[1 - axis], B, U))
        for k in (range(n - 1, -1, -1) if reverse else range(n)):
            xk = inp[k] if axis == 0 else inp[:, k]
            h = np.tanh(xk @ p[f"{name}_U"].T + h @ p[f"{name}_W"].T + p[f"{name}_b"])
            if axis == 0:
                out[k] = h
            else:
                out[:, k] = h
        return out
    v = np.concatenate([sweep(patches, "rnn1", 0, False), sweep(patches, "rnn2", 0, True)], -1)
    hz = np.concatenate([sweep(v, "rnn3", 1, False), sweep(v, "rnn4", 1, True)], -1)
    return hz.transpose(2, 3, 0, 1)


def test_spatial_rnn():
    x = RNG.standard_normal((2, 3, 4, 6))
    y, p, _ = run(lambda net, x: nn.SpatialRNN((2, 3), hidden=2)(net, x), {"x": (x, ())})
    assert y.shape == (2, 4, 2, 2)
    np.testing.assert_allclose(y, spatial_ref(x, p, (2, 3), 2), atol=1e-12)


def test_spatial_rnn_refuses_or_pads():
    m = rc.Model("s")
    x = m.input("x", (2, 5, 4), axes=())
    with pytest.raises(ShapeError, match="not divisible"):
        nn.SpatialRNN((2, 2), hidden=2)(m, x)
    y = nn.SpatialRNN((2, 2), hidden=2, pad=True)(m, x)
    assert y.shape == (4, 3, 2)


def test_dense_needs_vector():
    m = rc.Model("d")
    with pytest.raises(ShapeError, match="Flatten"):
        nn.Dense(3)(m, m.input("x", (2, 3, 3), axes=()))


def test_spec_round_trip():
    clf = nn.Classifier((nn.Conv2d(4, 3, padding=1, activation="relu"), nn.BatchNorm(),
                         nn.SpatialRNN((2, 2), cell=nn.LSTMCell(3, peephole=True)), nn.AvgPool2d("all"),
                         nn.Dropout(0.2), nn.Flatten(), nn.Dense(3), nn.Softmax()), (1, 4, 4))
    back = nn.Classifier.from_spec(clf.spec())
    assert back.spec() == clf.spec()
    with pytest.raises(ValueError, match="unknown layer type"):
        nn.from_spec({"layer": "os.system", "command": "true"})


def without_weight_names(spec):
    """``spec`` as an rnnc before the lecture names wrote it: no ``weight_names`` marks."""
    if isinstance(spec, dict):
        return {k: without_weight_names(v) for k, v in spec.items() if k != "weight_names"}
    return [without_weight_names(v) for v in spec] if isinstance(spec, list) else spec


@pytest.mark.parametrize("layer, where, kind", [
    (nn.LSTM(3), "layer.cell", "LSTMCell"), (nn.Bidirectional(nn.GRUCell(2)), "layer.cell", "GRUCell"),
    (nn.Jordan(3, 2), "layer.cell", "JordanCell"), (nn.SpatialRNN((2, 2), hidden=3), "layer", "SpatialRNN"),
])
def test_specs_from_before_the_lecture_names_are_refused(layer, where, kind):
    """Input weights were W and recurrent weights U; arrays saved so would load swapped (silently when square)."""
    assert nn.from_spec(layer.spec()) == layer
    with pytest.raises(nn.SpecError) as err:
        nn.from_spec(without_weight_names(layer.spec()))
    msg = str(err.value)
    assert msg.startswith(f"{where}: saved by an older rnnc whose {kind} named its input weights W") and \
        "U (input -> hidden) and W (hidden -> hidden)" in msg and '"weight_names": 2' in msg, msg


@nn.register_layer
@dataclasses.dataclass
class HalfCell(nn.Cell):
    """A registered user cell: h = (U x + W h_prev) / 2."""

    hidden: int = 2

    def declare(self, net, name, input_size):
        return {"U": net.param(f"{name}_U", (2, input_size)), "W": net.param(f"{name}_W", (2, 2))}

    def step(self, p, x, prev):
        return (0.5 * (p["U"] @ x + p["W"] @ prev[0]),)


def test_user_cells_need_no_weight_names_mark():
    layer = nn.Recurrent(HalfCell())
    assert layer.spec()["cell"]["weight_names"] == 2
    assert nn.from_spec(without_weight_names(layer.spec())) == layer


def test_model_files_from_before_the_lecture_names_are_refused(tmp_path):
    import json

    from rnnc.train.checkpoint import CheckpointError, atomic_savez, load_model, save_model

    clf = nn.Classifier((nn.SpatialRNN((2, 2), hidden=3), nn.Flatten(), nn.Dense(2)), (1, 4, 4))
    params = clf.build().model.init_params()
    base = str(tmp_path / "old")
    save_model(base, clf, params)
    load_model(base)
    with open(base + ".json") as f:
        meta = json.load(f)
    meta["spec"] = without_weight_names(meta["spec"])
    atomic_savez(base + ".npz", {f"param/{k}": v for k, v in params.items()}, {"spec": meta["spec"]}, "rnnc-model")
    with open(base + ".json", "w") as f:
        json.dump(meta, f)
    with pytest.raises(CheckpointError, match=r"old\.json: field spec\.layers\[0\]: saved by an older rnnc whose "
                                              r"SpatialRNN named its input weights W"):
        load_model(base)
