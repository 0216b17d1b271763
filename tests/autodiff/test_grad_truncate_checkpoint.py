"""Truncated BPTT against a brute-force unrolled reference; checkpointed gradients equal plain ones."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from zoo import ZOO

import rnnc as rc
from rnnc import t
from rnnc.autodiff.unrolled import truncated_reference


def _elman_h0(T=7, B=2, seed=0):
    m = rc.Model("elman_h0")
    x = m.input("x", 3)
    y = m.input("y", (), dtype="int")
    U, W, V, b = m.param("U", (4, 3)), m.param("W", (4, 4)), m.param("V", (2, 4)), m.param("b", 4)
    h0 = m.param("h0", 4)
    h = m.signal("h", 4)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + b)
    m.initial(h, h0)
    m.loss(rc.softmax_cross_entropy(V @ h[t], y[t]))
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.normal(size=(T, B, 3)), "y": rng.integers(0, 2, (T, B))}
    params = {k: rng.normal(scale=0.6, size=v.shape) for k, v in m.graph.params.items()}
    return m, inputs, params


@pytest.mark.parametrize("k1,k2", [(3, 2), (3, 3), (2, 5), (1, 1), (3, 7), (4, 1), (7, 7), (2, 3)])
def test_truncated_bptt_equals_brute_force_reference(k1, k2):
    m, inputs, params = _elman_h0()
    got = rc.interpret(rc.grad(m, truncate=(k1, k2)), inputs, params).grads
    want = truncated_reference(m.unroll(t=7), inputs, params, k1, k2)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-13, err_msg=f"{k} k1={k1} k2={k2}")


def test_truncation_to_the_whole_sequence_is_full_bptt_and_shorter_windows_differ():
    m, inputs, params = _elman_h0()
    full = rc.interpret(rc.grad(m), inputs, params).grads
    same = rc.interpret(rc.grad(m, truncate=(7, 7)), inputs, params).grads
    short = rc.interpret(rc.grad(m, truncate=(3, 2)), inputs, params).grads
    for k in params:
        np.testing.assert_allclose(same[k], full[k], rtol=1e-12, atol=1e-14)
    assert np.abs(short["W"] - full["W"]).max() > 1e-3
    assert np.abs(short["h0"]).max() == 0.0  # window of chunk 0 is [1, 2]: step 0, reading h[-1], is cut


@given(st.integers(1, 6), st.integers(1, 8), st.integers(1, 6), st.integers(0, 1000))
def test_truncated_bptt_random_lengths(k1, k2, T, seed):
    m, inputs, params = _elman_h0(T=T, seed=seed)
    got = rc.interpret(rc.grad(m, truncate=(k1, k2)), inputs, params).grads
    want = truncated_reference(m.unroll(t=T), inputs, params, k1, k2)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["lstm", "two_tap", "stack2"])
def test_truncated_bptt_on_more_cells(name):
    case = ZOO[name]()
    T, B = 6, 2
    inputs = case.make_inputs(np.random.default_rng(2), T, B, np.float64)
    params = case.params(2)
    got = rc.interpret(rc.grad(case.model, truncate=(2, 3)), inputs, params, sizes=case.sizes(T), batch=B)
    want = truncated_reference(case.model.unroll(**case.sizes(T)), inputs, params, 2, 3)
    for k in params:
        np.testing.assert_allclose(got.grads[k], want[k], rtol=1e-10, atol=1e-13)


def test_truncation_refuses_reverse_recurrences():
    case = ZOO["bidirectional"]()
    with pytest.raises(rc.GraphError, match="forward recurrences"):
        rc.grad(case.model, truncate=(2, 2))


@pytest.mark.parametrize("name", ["elman", "lstm", "gru", "two_tap", "stack2", "bidirectional",
                                  "variable_length", "renet", "encoder_decoder", "many_to_one"])
@pytest.mark.parametrize("every", [1, 2, 3, 50])
def test_checkpointed_gradients_equal_plain_ones_exactly(name, every):
    case = ZOO[name]()
    T, B = 7, 2
    inputs = case.make_inputs(np.random.default_rng(4), T, B, np.float64)
    params = case.params(4)
    plain = rc.interpret(rc.grad(case.model), inputs, params, sizes=case.sizes(T), batch=B)
    ckpt = rc.interpret(rc.grad(case.model, checkpoint=every), inputs, params, sizes=case.sizes(T), batch=B)
    assert ckpt.loss == plain.loss
    for k in params:
        np.testing.assert_array_equal(ckpt.grads[k], plain.grads[k], err_msg=k)


def test_checkpoint_recomputes_the_lstm_gates():
    from rnnc.interpret.checkpoint import CheckpointInterpreter

    gm = rc.grad(ZOO["lstm"]().model, checkpoint=4)
    lazy = CheckpointInterpreter(gm.graph, 4).lazy
    assert {n.op for n in lazy} >= {"sigmoid", "tanh"}


def test_bad_options_are_refused():
    m = ZOO["elman"]().model
    with pytest.raises(ValueError, match="checkpoint"):
        rc.grad(m, checkpoint=0)
    with pytest.raises(ValueError, match="truncate"):
        rc.grad(m, truncate=(0, 2))
