"""``rc.interpret`` checks the arrays it is handed: wrong shape, dtype, missing or unknown names raise a
``ValueError`` naming the input, what was expected and what came."""
import numpy as np
import pytest
from zoo import ZOO

import rnnc as rc


@pytest.fixture
def elman():
    case = ZOO["elman"]()
    rng = np.random.default_rng(0)
    return case.model, case.make_inputs(rng, 4, 2, np.float64), case.params(0)


def _err(m, inputs, params, **kw) -> str:
    with pytest.raises(ValueError) as err:
        rc.interpret(m, inputs, params, **kw)
    return str(err.value)


def test_wrong_feature_shape(elman):
    m, inp, p = elman
    msg = _err(m, dict(inp, x=np.zeros((4, 2, 5))), p)
    assert "'x'" in msg and "(T, B, 3)" in msg and "(4, 2, 5)" in msg


def test_wrong_rank(elman):
    m, inp, p = elman
    msg = _err(m, dict(inp, x=np.zeros((4, 3))), p)
    assert "'x'" in msg and "(T, B, 3)" in msg and "(4, 3)" in msg


def test_wrong_dtype_for_class_indices(elman):
    m, inp, p = elman
    msg = _err(m, dict(inp, y=inp["y"].astype(np.float64)), p)
    assert "'y'" in msg and "int" in msg and "float64" in msg


def test_wrong_dtype_for_real_input(elman):
    m, inp, p = elman
    msg = _err(m, dict(inp, x=np.full((4, 2, 3), "a")), p)
    assert "'x'" in msg and "real" in msg and "<U1" in msg
    msg = _err(m, dict(inp, x=np.zeros((4, 2, 3), dtype=bool)), p)
    assert "'x'" in msg and "bool" in msg


def test_missing_input(elman):
    m, inp, p = elman
    msg = _err(m, {"y": inp["y"]}, p)
    assert "'x'" in msg and "(T, B, 3)" in msg


def test_unknown_input(elman):
    m, inp, p = elman
    msg = _err(m, dict(inp, z=np.zeros(3)), p)
    assert "'z'" in msg and "'x'" in msg and "'y'" in msg


def test_missing_and_misshapen_params(elman):
    m, inp, p = elman
    msg = _err(m, inp, {k: v for k, v in p.items() if k != "W"})
    assert "'W'" in msg and "(4, 4)" in msg
    msg = _err(m, inp, dict(p, W=np.zeros((4, 3))))
    assert "'W'" in msg and "(4, 4)" in msg and "(4, 3)" in msg
    msg = _err(m, inp, dict(p, W=np.zeros((4, 4), dtype=int)))
    assert "'W'" in msg and "float" in msg and "int" in msg


def test_batch_and_axis_sizes_must_agree(elman):
    m, inp, p = elman
    msg = _err(m, dict(inp, y=np.zeros((4, 3), int)), p)
    assert "'y'" in msg and "3" in msg and "2" in msg
    msg = _err(m, dict(inp, y=np.zeros((5, 2), int)), p)
    assert "'y'" in msg and "'t'" in msg and "5" in msg and "4" in msg
    msg = _err(m, inp, p, sizes={"t": 7})
    assert "'t'" in msg and "7" in msg


def test_unknown_axis_size_is_asked_for():
    case = ZOO["autonomous"]()
    msg = _err(case.model, {}, case.params())
    assert "'t'" in msg and "sizes=" in msg


def test_lengths_out_of_range():
    case = ZOO["variable_length"]()
    inp = case.make_inputs(np.random.default_rng(0), 4, 2, np.float64)
    for bad in ([0, 2], [2, 5]):
        msg = _err(case.model, dict(inp, x_lengths=np.array(bad)), case.params())
        assert "'x_lengths'" in msg and "1..4" in msg and str(max(bad) if max(bad) > 4 else 0) in msg


def test_dtype_rules(elman):
    m, inp, p = elman
    assert rc.interpret(m, inp, p).outputs["o"].dtype == np.float64
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    assert rc.interpret(m, inp, p32).outputs["o"].dtype == np.float32
    assert rc.interpret(m, inp, p, dtype="float32").outputs["o"].dtype == np.float32
    with pytest.raises(ValueError, match="float16"):
        rc.interpret(m, inp, p, dtype="float16")


def test_targets_only_the_loss_needs_are_optional(elman):
    m, inp, p = elman
    res = rc.interpret(m, {"x": inp["x"]}, p)
    full = rc.interpret(m, inp, p)
    assert res.loss is None and full.loss is not None
    np.testing.assert_array_equal(res.outputs["o"], full.outputs["o"])


def test_unrolled_interpreter_checks_sizes(elman):
    m, inp, p = elman
    with pytest.raises(ValueError, match="'t'"):
        rc.interpret_unrolled(m.unroll(t=3), inp, p)
