"""The public op-extension API (``rc.register_op``, docs/extending.md), used as a user would: from this file only.

``softplus2`` is defined here through the API; a gated recurrence using it inside a scan compiles with the scan
in row blocks (like the same model with ``rc.tanh``) and the op fused into the scan body, equals the
interpreter, and its gradients equal central finite differences (tests/gradcheck.py). Scalar forms outside the
safe language, and bad names, are refused with a clear message.
"""
from __future__ import annotations

import numpy as np
import pytest
from compiled_check import assert_matches_interpreter, close, worst
from gradcheck import check_param_grads

import rnnc as rc
from rnnc import t
from rnnc.ops.scalar import exp, log1p, maximum


@rc.register_op(numpy=lambda x: np.logaddexp(0.0, x), vjp=lambda g, y, x: g * rc.sigmoid(x))
def softplus2(x):
    """softplus, written as a user would."""
    return maximum(x, 0.0) + log1p(exp(-abs(x)))


def _model(act) -> rc.Model:
    m = rc.Model("user_op")
    x, y = m.input("x", 3), m.input("y", 2)
    U, W, b = m.param("U", (2, 3)), m.param("W", (2, 2)), m.param("b", 2)
    h = m.signal("h", 2)
    h[t] = act(U @ x[t] + W @ h[t - 1] + b) * 0.5
    m.output("h", h[t])
    m.loss(rc.mse(h[t], y[t]))
    return m


def _data(m, B=5):
    rng = np.random.default_rng(3)
    inputs = {"x": rng.normal(size=(4, B, 3)), "y": rng.normal(size=(4, B, 2))}
    params = {k: rng.normal(size=n.shape) * 0.7 for k, n in m.graph.params.items()}
    return inputs, params


def test_user_op_is_fused_in_a_row_block_scan_and_equals_the_interpreter():
    m = _model(softplus2)
    inputs, params = _data(m)
    f = rc.compile(m, dtype="float64")
    progs = [n.attr("prog") for n in f.kernel("outputs").graph.nodes if n.op == "fused"]
    assert any(op == "softplus2" for prog in progs for op, *_ in prog), "softplus2 is not fused"
    assert "softplus2" not in {n.op for n in f.kernel("outputs").graph.nodes}
    assert "math.log1p(" in f.source
    blocks = f.source.count("_blocks(stage_")
    assert blocks >= 1 and blocks == rc.compile(_model(rc.tanh), dtype="float64").source.count("_blocks(stage_")
    assert_matches_interpreter(f, m, inputs, params, 1e-12, atol=0.0, grad_tol=1e-10, grad_atol=1e-12)


def test_user_op_gradients_equal_finite_differences():
    m = _model(softplus2)
    inputs, params = _data(m, B=2)
    errors = check_param_grads(m, inputs, params)
    assert max(errors.values()) < 1e-7, errors


def test_user_op_float32_and_drawing(tmp_path):
    m = _model(softplus2)
    inputs, params = _data(m)
    out = rc.compile(m).forward(inputs, params).outputs["h"]
    ref = rc.interpret(m, inputs, params, dtype="float64").outputs["h"]
    assert close(out, ref, 1e-4, atol=1e-5), worst(out, ref)
    for obj, name in ((m, "m.dot"), (m.unroll(t=3), "u.dot"), (rc.grad(m), "g.dot")):
        assert "softplus2" in rc.render(obj, tmp_path / name, detail=True).read_text()


def test_text_form_and_call_form():
    def ref(a, b):
        return np.where(a > b, a - b, 0.5 * (b - a))
    hinge = rc.register_op("hinge_text", scalar="where(x > y, x - y, 0.5 * (y - x))", numpy=ref)
    try:
        m = rc.Model("text_form")
        a, b = m.input("a", 2), m.input("b", 2)
        m.output("o", hinge(a[t], b[t]))
        rng = np.random.default_rng(0)
        ins = {"a": rng.normal(size=(3, 2, 2)), "b": rng.normal(size=(3, 2, 2))}
        got = rc.compile(m, dtype="float64").forward(ins, {}).outputs["o"]
        np.testing.assert_allclose(got, ref(ins["a"], ins["b"]), rtol=1e-12)
    finally:
        rc.ops.unregister_op("hinge_text")


@pytest.mark.parametrize("form, message", [
    ("__import__('os').system('true')", "not allowed"),
    ("x.real", "not allowed"),
    ("exp(x, 2)", "exp"),
    ("[x]", "not allowed"),
    ("x if y else z", None),
    ("lambda: 0", "not allowed"),
    ("open('f')", "not allowed"),
    ("x + 'a'", "not allowed"),
    ("x < y < z", "not allowed"),
])
def test_text_forms_outside_the_language_are_refused(form, message):
    if message is None:          # a ternary is where(): allowed
        rc.register_op("ternary_ok", scalar=form)
        rc.ops.unregister_op("ternary_ok")
        return
    with pytest.raises(ValueError, match=message):
        rc.register_op("refused_form", scalar=form)
    assert "refused_form" not in rc.ops.OPS


def test_function_forms_outside_the_language_are_refused():
    with pytest.raises(ValueError, match="cannot branch"):
        rc.register_op("branchy", scalar=lambda x: x if x > 0 else -x)
    with pytest.raises(ValueError, match="numbers"):
        rc.register_op("stringy", scalar=lambda x: x + "1")
    with pytest.raises(ValueError, match="plain parameter"):
        rc.register_op("variadic", scalar=lambda *xs: xs[0])
    with pytest.raises(ValueError, match="finite"):
        rc.register_op("infinite", scalar=lambda x: x * float("inf"))
    assert not {"branchy", "stringy", "variadic", "infinite"} & set(rc.ops.OPS)


def test_names_are_checked_and_unique():
    with pytest.raises(ValueError, match="not a valid Python identifier"):
        rc.register_op("bad name", scalar=lambda x: x)
    with pytest.raises(ValueError, match="registered twice"):
        rc.register_op("softplus2", scalar=lambda x: x)
    with pytest.raises(ValueError, match="registered twice"):
        rc.register_op("tanh", scalar=lambda x: x)


def test_generated_code_never_holds_user_text():
    """A form's text is parsed; what reaches the module is rnnc's rendering of the tree."""
    op = rc.register_op("spaced", scalar="  x   *   2  # a comment\n")
    try:
        m = rc.Model("spaced_m")
        x = m.input("x", 2)
        m.output("o", op(x[t]))
        src = rc.compile(m, dtype="float64").source
        assert "a comment" not in src and "* F(2.0))" in src
    finally:
        rc.ops.unregister_op("spaced")
