"""rnnc/dsl/model.py: the rule of names across declarations. An output may share a signal's name
(``m.output("h", h[t])``); every other pair of names must differ."""
import numpy as np
import pytest

import rnnc as rc
from rnnc.errors import GraphError

t = rc.t


def elman(output_first: bool = False) -> rc.Model:
    m = rc.Model("elman")
    x = m.input("x", 3)
    U, W = m.param("U", (4, 3)), m.param("W", (4, 4))
    if output_first:                                   # the output is declared before the signal it names
        m.output("h", rc.tanh(U @ x[t]))
    h = m.signal("h", 4)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1])
    if not output_first:
        m.output("h", h[t])
    m.output("h_last", h.last(t))
    m.loss(rc.fsum(h[t] * h[t]))
    return m


def test_an_output_may_share_its_signals_name_end_to_end(tmp_path):
    m = elman()
    params = m.init_params(0)
    X = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    res = rc.interpret(m, {"x": X}, params)
    h = np.zeros((2, 4), np.float32)
    for k in range(5):
        h = np.tanh(X[k] @ params["U"].T + h @ params["W"].T)
        np.testing.assert_allclose(res.outputs["h"][k], h, atol=1e-6)
    np.testing.assert_array_equal(res.outputs["h_last"], res.outputs["h"][-1])
    f = rc.compile(m)
    np.testing.assert_allclose(f.forward({"x": X}, params).outputs["h"], res.outputs["h"], atol=1e-5)
    assert "U" in rc.interpret(rc.grad(m), {"x": X}, params).grads
    rc.save(str(tmp_path / "elman.rnnc"), m, params)
    m2, p2 = rc.load(str(tmp_path / "elman.rnnc"))
    np.testing.assert_array_equal(rc.interpret(m2, {"x": X}, p2).outputs["h"], res.outputs["h"])


def test_a_signal_may_take_an_outputs_name():
    assert set(elman(output_first=True).graph.outputs) == {"h", "h_last"}


@pytest.mark.parametrize("first, second", [("input", "output"), ("param", "output"), ("output", "output"),
                                           ("signal", "signal"), ("input", "signal"), ("param", "input")])
def test_other_shared_names_are_refused(first, second):
    m = rc.Model("m")
    declare = {"input": lambda: m.input("a", 2), "param": lambda: m.param("a", 2),
               "signal": lambda: m.signal("a", 2), "output": lambda: m.output("a", m.params.get("p"))}
    m.param("p", 2)
    declare[first]()
    with pytest.raises(GraphError, match=f"{second} name 'a' is already used by a {first} of model 'm'"):
        declare[second]()
