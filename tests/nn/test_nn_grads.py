"""Gradients of layer models (rc.grad, interpreted) against central finite differences in float64, and the
recurrent layers against PyTorch where it is installed."""
import numpy as np
import pytest
from gradcheck import verify_grad

import rnnc as rc
import rnnc.nn as nn

RNG = np.random.default_rng(1)


def fd_check(model, inputs, params, names=None, eps=1e-6, tol=1e-5, picks=6):
    """``picks`` random entries of each param's rc.grad (interpreted, float64) against central differences."""
    res = rc.interpret(rc.grad(model), inputs, params, dtype="float64")
    verify_grad(lambda p: rc.interpret(model, inputs, p, dtype="float64").loss, params, res.grads,
                names, eps, tol, picks, RNG)


def seq_model(layer, D=2, classes=3):
    net = nn.Network(rc.Model("s"))
    m = net.model
    x = m.input("x", D)
    y = m.input("y", (), dtype="int")
    h = layer(net, x)
    m.loss(rc.softmax_cross_entropy(nn.Dense(classes)(net, h), y[rc.t]))
    return m


@pytest.mark.parametrize("layer", [nn.Elman(3, transition=1, deep_output=(2,)), nn.Jordan(3, 2),
                                   nn.LSTM(3, peephole=True), nn.LSTM(2, coupled=True),
                                   nn.LSTM(2, peephole=True, coupled=True),
                                   nn.Bidirectional(nn.GRUCell(2))], ids=lambda x: type(x).__name__)
def test_recurrent_layer_grads(layer):
    m = seq_model(layer)
    p = m.init_params(0, "float64")
    inputs = {"x": RNG.standard_normal((4, 2, 2)), "y": RNG.integers(0, 3, (4, 2))}
    fd_check(m, inputs, p)


@pytest.mark.parametrize("peephole", [False, True])
def test_coupled_lstm_has_no_forget_weights(peephole):
    """A coupled LSTM (f = 1 - i) stacks only the gates i, g, o: no param is allocated for the forget gate, and
    every param it has gets a gradient that is not identically zero."""
    m = seq_model(nn.LSTM(3, peephole=peephole, coupled=True))
    p = m.init_params(0, "float64")
    assert p["rnn1_U"].shape == (9, 2) and p["rnn1_W"].shape == (9, 3) and p["rnn1_b"].shape == (9,)
    assert "rnn1_pf" not in p and ("rnn1_pi" in p) == peephole
    p = {k: v + RNG.standard_normal(v.shape) * 0.3 for k, v in p.items()}
    inputs = {"x": RNG.standard_normal((4, 2, 2)), "y": RNG.integers(0, 3, (4, 2))}
    grads = rc.interpret(rc.grad(m), inputs, p, dtype="float64").grads
    assert all(np.abs(grads[k]).max() > 1e-6 for k in p), {k: np.abs(g).max() for k, g in grads.items()}


def test_conv_bn_spatial_classifier_grads():
    clf = nn.Classifier((nn.Normalizer(2.0), nn.Conv2d(3, 3, padding=2, dilation=2, activation="tanh"),
                         nn.BatchNorm(), nn.MaxPool2d(3, 2, 1), nn.SpatialRNN((2, 2), hidden=2), nn.BatchNorm(),
                         nn.Conv2d(3, 1, padding=1), nn.AvgPool2d("all"), nn.Softmax()), (1, 8, 8))
    m = clf.build(True).model
    p = m.init_params(0, "float64")
    inputs = {"x": RNG.standard_normal((3, 1, 8, 8)), "y": np.array([0, 2, 1])}
    fd_check(m, inputs, p, picks=3)


def _torch():
    return pytest.importorskip("torch", reason="PyTorch not installed (pip install torch==2.13.0)")


def _torch_rnn(kind, p, name, D, H):
    torch = _torch()
    mod = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(D, H).double()
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.tensor(p[f"{name}_U"]))
        mod.weight_hh_l0.copy_(torch.tensor(p[f"{name}_W"]))
        if kind == "lstm":
            mod.bias_ih_l0.copy_(torch.tensor(p[f"{name}_b"]))
            mod.bias_hh_l0.zero_()
        else:
            mod.bias_ih_l0.copy_(torch.tensor(p[f"{name}_bx"]))
            mod.bias_hh_l0.copy_(torch.tensor(p[f"{name}_bh"]))
    return mod


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_lstm_gru_match_torch(kind):
    torch = _torch()
    T, B, D, H = 5, 3, 4, 3
    net = nn.Network(rc.Model("tt"))
    m = net.model
    x = m.input("x", D)
    h = (nn.LSTM(H) if kind == "lstm" else nn.GRU(H))(net, x)
    m.output("h", h)
    m.loss(rc.fsum(h))
    p = {k: RNG.standard_normal(v.shape) * 0.5 for k, v in m.init_params(0, "float64").items()}
    X = RNG.standard_normal((T, B, D))
    ours = rc.interpret(m, {"x": X}, p, dtype="float64").outputs["h"]
    mod = _torch_rnn(kind, p, "rnn1", D, H)
    out, _ = mod(torch.tensor(X))
    np.testing.assert_allclose(ours, out.detach().numpy(), atol=1e-12)
    (out.sum() / B).backward()
    g = rc.interpret(rc.grad(m), {"x": X}, p, dtype="float64").grads
    np.testing.assert_allclose(g["rnn1_U"], mod.weight_ih_l0.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(g["rnn1_W"], mod.weight_hh_l0.grad.numpy(), atol=1e-10)


def test_batchnorm_running_stats_match_torch():
    """Trainer's running-statistic update equals torch.nn.BatchNorm2d's (momentum 0.1, unbiased variance)."""
    torch = _torch()
    from rnnc.train.optim import GradientDescentMomentum
    from rnnc.train.trainer import Trainer

    clf = nn.Classifier((nn.BatchNorm(), nn.Flatten(), nn.Dense(2)), (2, 3, 3))
    X = RNG.standard_normal((8, 2, 3, 3))
    tr = Trainer(clf, GradientDescentMomentum(0.0, 0.0), batch_size=4, dtype="float64", progress=False,
                 engine="interpret")
    tr.fit({"x": X, "y": np.zeros(8, int)}, epochs=1)
    bn = torch.nn.BatchNorm2d(2).double()
    perm = np.random.default_rng([0, 0]).permutation(8)
    for s in (0, 4):
        bn(torch.tensor(X[perm[s:s + 4]]))
    np.testing.assert_allclose(tr.buffers["bn1_running_mean"], bn.running_mean.numpy(), atol=1e-12)
    np.testing.assert_allclose(tr.buffers["bn1_running_var"], bn.running_var.numpy(), atol=1e-12)
