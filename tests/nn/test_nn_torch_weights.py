"""rnnc.nn.torch_weights: rnnc's Elman / LSTM / GRU layers against PyTorch's nn.RNN / nn.LSTM / nn.GRU with
weights moved both ways (outputs equal to 1e-5), and the refusals, which need no torch."""
import numpy as np
import pytest

import rnnc as rc
import rnnc.nn as nn

RNG = np.random.default_rng(7)
T, B, D, H = 5, 3, 4, 3
NO_TORCH = "PyTorch not installed (pip install torch==2.13.0, or the peers extra: pip install -e .[peers])"

KINDS = {"rnn_tanh": lambda: nn.ElmanCell(H), "rnn_relu": lambda: nn.ElmanCell(H, "relu"),
         "lstm": lambda: nn.LSTMCell(H), "gru": lambda: nn.GRUCell(H)}


def rnnc_model(cell, layers: int, bidirectional: bool) -> rc.Model:
    """``layers`` stacked layers of ``cell`` (pairs with ``bidirectional``): PyTorch's num_layers."""
    layer = nn.Bidirectional(cell) if bidirectional else nn.Recurrent(cell)
    net = nn.Network(rc.Model("tw"))
    m = net.model
    m.output("h", nn.Stack([layer] * layers)(net, m.input("x", D)))
    return m


def layer_of(cell, bidirectional):
    return nn.Bidirectional(cell) if bidirectional else nn.Recurrent(cell)


def torch_module(kind: str, layers: int, bidirectional: bool):
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    torch.manual_seed(0)
    if kind.startswith("rnn"):
        return torch.nn.RNN(D, H, layers, nonlinearity=kind[4:], bidirectional=bidirectional)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](D, H, layers, bidirectional=bidirectional)


def torch_run(mod, X):
    import torch

    with torch.no_grad():
        return mod(torch.as_tensor(X))[0].numpy()


CASES = [(kind, 1, False) for kind in KINDS] + [("lstm", 2, True), ("gru", 2, False), ("rnn_tanh", 1, True)]


@pytest.mark.parametrize("kind, layers, bidirectional", CASES)
def test_import_from_torch_matches_torch(kind, layers, bidirectional):
    mod = torch_module(kind, layers, bidirectional)
    cell = KINDS[kind]()
    X = RNG.standard_normal((T, B, D)).astype(np.float32)
    params = nn.from_torch(mod.state_dict(), layer_of(cell, bidirectional))
    m = rnnc_model(cell, layers, bidirectional)
    assert sorted(params) == sorted(m.init_params())
    ours = rc.interpret(m, {"x": X}, params).outputs["h"]
    np.testing.assert_allclose(ours, torch_run(mod, X), atol=1e-5)


@pytest.mark.parametrize("kind, layers, bidirectional", CASES)
def test_export_to_torch_matches_rnnc(kind, layers, bidirectional):
    import_torch = pytest.importorskip("torch", reason=NO_TORCH)
    cell = KINDS[kind]()
    m = rnnc_model(cell, layers, bidirectional)
    params = {k: (v + RNG.standard_normal(v.shape) * 0.3).astype(np.float32) for k, v in m.init_params(1).items()}
    X = RNG.standard_normal((T, B, D)).astype(np.float32)
    mod = torch_module(kind, layers, bidirectional)
    sd = nn.to_torch(params, layer_of(cell, bidirectional), layers)
    mod.load_state_dict({k: import_torch.as_tensor(v) for k, v in sd.items()})    # strict: every key, no extra
    ours = rc.interpret(m, {"x": X}, params).outputs["h"]
    np.testing.assert_allclose(torch_run(mod, X), ours, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip_without_torch(kind):
    cell = KINDS[kind]()
    m = rnnc_model(cell, 2, True)
    params = m.init_params(3)
    sd = nn.to_torch(params, nn.Bidirectional(cell), layers=2, prefix="enc.")
    assert "enc.weight_hh_l1_reverse" in sd and sd["enc.weight_ih_l1"].shape[1] == 2 * H
    back = nn.from_torch({**sd, "dec.weight": np.zeros(2)}, nn.Bidirectional(cell), prefix="enc.")
    assert sorted(back) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])


def test_bias_false_imports_zero_biases():
    sd = nn.to_torch(rnnc_model(nn.GRUCell(H), 1, False).init_params(), nn.GRU(H))
    back = nn.from_torch({k: v for k, v in sd.items() if k.startswith("weight")}, nn.GRU(H))
    assert not back["rnn1_bx"].any() and not back["rnn1_bh"].any()


@pytest.mark.parametrize("layer, match", [
    (nn.LSTM(H, peephole=True), "peephole or coupled"), (nn.LSTM(H, coupled=True), "peephole or coupled"),
    (nn.Jordan(H, 2), "JordanCell has no PyTorch counterpart"), (nn.Elman(H, "sigmoid"), "nonlinearity"),
    (nn.Elman(H, transition=1), "deep-transition"), (nn.GRU(H, deep_output=(2,)), "deep_output"),
    (nn.Elman(H, reverse=True), "nn.Bidirectional"),
])
def test_what_torch_lacks_is_refused(layer, match):
    with pytest.raises(ValueError, match=match):
        nn.to_torch({}, layer)
    with pytest.raises(ValueError, match=match):
        nn.from_torch({}, layer)


def test_mismatched_state_dicts_are_refused_naming_the_key():
    sd = nn.to_torch(rnnc_model(nn.LSTMCell(H), 1, True).init_params(), nn.Bidirectional(nn.LSTMCell(H)))
    with pytest.raises(ValueError, match="bidirectional module: pass nn.Bidirectional"):
        nn.from_torch(sd, nn.LSTM(H))
    with pytest.raises(ValueError, match=r"'weight_ih_l0': expected shape \(16, 4\), got \(12, 4\)"):
        nn.from_torch(sd, nn.Bidirectional(nn.LSTMCell(4)))
    with pytest.raises(ValueError, match="'weight_ih_l0_reverse'"):
        nn.from_torch({k: v for k, v in sd.items() if k != "weight_ih_l0_reverse"}, nn.Bidirectional(nn.LSTMCell(H)))
    with pytest.raises(ValueError, match="'weight_hr_l0'.*proj_size"):
        nn.from_torch({**sd, "weight_hr_l0": np.zeros((2, 3))}, nn.Bidirectional(nn.LSTMCell(H)))
    with pytest.raises(ValueError, match="no nn.GRU weights.*'gru.'"):
        nn.from_torch(sd, nn.GRU(H), prefix="gru.")
    with pytest.raises(ValueError, match="names: expected 2"):
        nn.from_torch(sd, nn.Bidirectional(nn.LSTMCell(H)), names=["a"])
    with pytest.raises(ValueError, match="no param 'rnn1_U'"):
        nn.to_torch({}, nn.LSTM(H), layers=2)
