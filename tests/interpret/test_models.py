"""Every zoo model: the rolled interpreter equals the hand-written numpy reference and the unrolled
interpreter (float64, 1e-10), and float32 runs stay close."""
import numpy as np
import pytest
from zoo import ZOO

import rnnc as rc

TOL = dict(rtol=1e-10, atol=1e-10)


def _run(case, T, B, seed=0):
    rng = np.random.default_rng(seed)
    inputs = case.make_inputs(rng, T, B, np.float64)
    params = case.params(seed)
    sizes = case.sizes(T)
    res = rc.interpret(case.model, inputs, params, sizes=sizes, batch=B)
    return inputs, params, sizes, res


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("T,B", [(1, 1), (4, 3)])
def test_interpreter_matches_numpy_reference(name, T, B):
    case = ZOO[name]()
    inputs, params, _, res = _run(case, T, B)
    outputs, loss = case.reference(inputs, params, T, B)
    assert set(res.outputs) == set(outputs)
    for k, want in outputs.items():
        assert res.outputs[k].dtype == np.float64, k
        assert res.outputs[k].shape == want.shape, k
        np.testing.assert_allclose(res.outputs[k], want, **TOL, err_msg=f"{name}: output {k}")
    assert res.loss == pytest.approx(loss, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_interpreter_matches_unrolled(name):
    case = ZOO[name]()
    T, B = 3, 2
    inputs, params, sizes, res = _run(case, T, B, seed=1)
    un = rc.interpret_unrolled(case.model.unroll(**sizes), inputs, params, batch=B)
    assert set(un.outputs) == set(res.outputs)
    for k in res.outputs:
        np.testing.assert_allclose(un.outputs[k], res.outputs[k], **TOL, err_msg=f"{name}: output {k}")
    for k in res.values:
        np.testing.assert_allclose(un.values[k], res.values[k], **TOL, err_msg=f"{name}: signal {k}")
    assert un.loss == pytest.approx(res.loss, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_float32_by_default(name):
    case = ZOO[name]()
    T, B = 3, 2
    rng = np.random.default_rng(2)
    inputs = case.make_inputs(rng, T, B, np.float32)
    params = {k: v.astype(np.float32) for k, v in case.params(2).items()}
    res = rc.interpret(case.model, inputs, params, sizes=case.sizes(T), batch=B)
    outputs, loss = case.reference(inputs, {k: v.astype(np.float64) for k, v in params.items()}, T, B)
    for k, want in outputs.items():
        assert res.outputs[k].dtype == np.float32, k
        np.testing.assert_allclose(res.outputs[k], want, rtol=1e-4, atol=1e-5, err_msg=f"{name}: {k}")
    assert res.loss == pytest.approx(loss, rel=1e-4, abs=1e-5)


def test_variable_length_state_holds_and_loss_skips_padding():
    """Changing inputs past a sample's length changes nothing the sample produces."""
    case = ZOO["variable_length"]()
    T, B = 5, 3
    rng = np.random.default_rng(3)
    inputs = case.make_inputs(rng, T, B, np.float64)
    inputs["x_lengths"] = np.array([2, 5, 1])
    params = case.params(3)
    a = rc.interpret(case.model, inputs, params)
    noisy = dict(inputs, x=inputs["x"].copy(), y=inputs["y"].copy())
    noisy["x"][2:, 0] += 10.0
    noisy["x"][1:, 2] -= 3.0
    noisy["y"][2:, 0] = (noisy["y"][2:, 0] + 1) % 3
    b = rc.interpret(case.model, noisy, params)
    assert a.loss == pytest.approx(b.loss, rel=1e-12)
    np.testing.assert_allclose(a.outputs["o_last"], b.outputs["o_last"])
    assert np.all(a.outputs["o"][2:, 0] == 0) and np.all(a.outputs["o"][1:, 2] == 0)
    h = a.values["h"]
    np.testing.assert_array_equal(h[4, 0], h[1, 0])
    np.testing.assert_array_equal(h[4, 2], h[0, 2])


def test_init_params_reproducible_and_dtype():
    m = ZOO["lstm"]().model
    p1, p2 = m.init_params(seed=5, dtype="float64"), m.init_params(seed=5, dtype="float64")
    assert set(p1) == set(m.graph.params)
    for k in p1:
        assert p1[k].dtype == np.float64 and p1[k].shape == m.graph.params[k].shape
        np.testing.assert_array_equal(p1[k], p2[k])
    p3 = m.init_params(seed=6)
    assert all(v.dtype == np.float32 for v in p3.values())
    assert any(not np.array_equal(p1[k], p3[k]) for k in p1 if np.any(p1[k]))


@pytest.mark.parametrize("builder", ["variable_length", "bidirectional"])
def test_padded_batch_equals_each_sample_run_alone(builder):
    """With lengths, each sample's valid steps equal a run on its own truncated sequence (forward and
    reverse recurrences: the reverse one starts at the sample's own last step)."""
    from zoo import bidirectional, elman

    case = elman(lengths=True) if builder == "variable_length" else bidirectional(lengths=True)
    T, B = 5, 3
    rng = np.random.default_rng(7)
    inputs = case.make_inputs(rng, T, B, np.float64)
    inputs["x_lengths"] = np.array([3, 5, 1])
    params = case.params(7)
    full = rc.interpret(case.model, inputs, params)
    total = 0.0
    for b, n in enumerate(inputs["x_lengths"]):
        alone = {"x": inputs["x"][:n, b:b + 1], "y": inputs["y"][:n, b:b + 1], "x_lengths": np.array([n])}
        one = rc.interpret(case.model, alone, params)
        np.testing.assert_allclose(full.outputs["o"][:n, b], one.outputs["o"][:, 0], rtol=1e-12, atol=1e-12)
        assert np.all(full.outputs["o"][n:, b] == 0)
        total += one.loss
    assert full.loss == pytest.approx(total / B, rel=1e-12)
