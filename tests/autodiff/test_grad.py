"""Symbolic BPTT: rc.grad against finite differences and against reverse mode over the unrolled graph."""
from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_param_grads, numeric_grad, rel_error
from zoo import ZOO

import rnnc as rc
from rnnc import t
from rnnc.autodiff.unrolled import unrolled_gradients

T, B = 4, 2


def _setup(name, seed=0):
    case = ZOO[name]()
    rng = np.random.default_rng(seed)
    inputs = case.make_inputs(rng, T, B, np.float64)
    return case, inputs, case.params(seed)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_gradients_match_finite_differences(name):
    case, inputs, params = _setup(name)
    errors = check_param_grads(case.model, inputs, params, sizes=case.sizes(T), batch=B)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("name", sorted(ZOO))
def test_rolled_gradient_equals_unrolled_reverse_mode(name):
    case, inputs, params = _setup(name, seed=1)
    rolled = rc.interpret(rc.grad(case.model), inputs, params, sizes=case.sizes(T), batch=B).grads
    unrolled = unrolled_gradients(case.model.unroll(**case.sizes(T)), inputs, params)
    for k in params:
        np.testing.assert_allclose(rolled[k], unrolled[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_gradient_of_a_forward_scan_is_a_reverse_scan():
    case = ZOO["elman"]()
    stages = rc.schedule(rc.grad(case.model))
    kinds = [(s.kind, s.direction) for s in stages]
    assert ("scan", 1) in kinds and ("scan", -1) in kinds
    assert kinds.index(("scan", 1)) < kinds.index(("scan", -1))
    # every param gradient is computed in a map stage (one big product in a backend), not inside a scan
    gm = rc.grad(case.model)
    grad_nodes = set(gm.graph.grads.values())
    for stage in stages:
        if stage.kind == "scan":
            assert not grad_nodes & set(stage.nodes)


def test_gradients_with_respect_to_inputs_signals_and_initial_values():
    m = rc.Model("enc")
    x = m.input("x", 3)
    y = m.input("y", (), dtype="int")
    W, U, V = m.param("W", (4, 4)), m.param("U", (4, 3)), m.param("V", (2, 4))
    h0 = m.param("h0", 4)
    h = m.signal("h", 4)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1])
    m.initial(h, h0)
    m.loss(rc.softmax_cross_entropy(V @ h[t], y[t]))
    rng = np.random.default_rng(3)
    inputs = {"x": rng.normal(size=(T, B, 3)), "y": rng.integers(0, 2, (T, B))}
    params = {k: rng.normal(scale=0.5, size=v.shape) for k, v in m.graph.params.items()}
    res = rc.interpret(rc.grad(m, wrt=["W", "x", "h0", "h"]), inputs, params)
    assert set(res.grads) == {"W", "x", "h0", "h"}

    def loss_x(arrs):
        return rc.interpret(m, arrs, params).loss

    inputs_x = {k: v.copy() for k, v in inputs.items()}
    assert rel_error(numeric_grad(loss_x, inputs_x, "x"), res.grads["x"]) < 1e-6

    def loss_p(p):
        return rc.interpret(m, inputs, p).loss

    assert rel_error(numeric_grad(loss_p, {k: v.copy() for k, v in params.items()}, "h0"), res.grads["h0"]) < 1e-6
    assert res.grads["h"].shape == (T, B, 4)
    # dL/dh[T-1] is the output's local gradient only: nothing flows back into the last step
    assert np.abs(res.grads["h"][-1]).max() > 0


def test_wrt_names_are_checked():
    case = ZOO["elman"]()
    with pytest.raises(ValueError, match="nope"):
        rc.grad(case.model, wrt=["nope"])


def test_model_without_loss_is_refused():
    m = rc.Model("noloss")
    x = m.input("x", 2)
    h = m.signal("h", 2)
    h[t] = rc.tanh(x[t] + h[t - 1])
    m.output("hidden", h[t])
    with pytest.raises(rc.GraphError, match="no loss"):
        rc.grad(m)


def test_unused_param_gets_zero_gradient():
    m = rc.Model("unused")
    x = m.input("x", 2)
    W = m.param("W", (2, 2))
    m.param("spare", 3)
    h = m.signal("h", 2)
    h[t] = rc.tanh(W @ x[t] + h[t - 1])
    m.loss(rc.fsum(h[t] * h[t]))
    params = {"W": np.eye(2), "spare": np.ones(3)}
    res = rc.interpret(rc.grad(m), {"x": np.ones((3, 2, 2))}, params)
    np.testing.assert_array_equal(res.grads["spare"], np.zeros(3))
