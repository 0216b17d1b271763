"""The op table (rnnc/ops/registry.py): every registered op has its rules, and they agree.

* every op has a shape rule, a numpy reference, a CPU template and a CUDA template (or is a leaf);
* every elementwise op has a scalar form, and the form evaluated with numpy equals the op's numpy reference;
* the op-name sets passes and backends read are derived from the table (and hold rnnc's own ops as before);
* every scalar-form op in a scan, and the embedding / layer-norm model, compile to the interpreter's values and
  gradients (float64), and the interpreter's gradients equal central finite differences (tests/gradcheck.py);
* a missing rule is refused naming the op; scalar forms outside their small language are refused.

The CUDA simulator half is tests/cuda_sim/test_op_table_cuda.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from compiled_check import assert_matches_interpreter
from gradcheck import check_param_grads
from op_cases import OP_TOL, lookup_data, lookup_model, scalar_data, scalar_model, scalar_ops

import rnnc as rc
from rnnc.ops import OPS
from rnnc.ops import scalar as S
from rnnc.ops.registry import LEAVES, ops_with, register

_CACHE: dict = {}


def _compiled(name, build, data):
    if name not in _CACHE:
        m = build()
        inputs, params = data(m)
        f = rc.compile(m, dtype="float64")
        _CACHE[name] = (m, inputs, params, f)
    return _CACHE[name]


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_has_its_rules(op):
    from rnnc.backends.cpu.ops import HANDLED_BY_RENDERER
    from rnnc.backends.cpu.ops import TEMPLATES as CPU
    from rnnc.backends.cuda.ops import TEMPLATES as CUDA

    spec = OPS[op]
    assert spec.name == op and callable(spec.shape) and callable(spec.numpy)
    if op in HANDLED_BY_RENDERER:
        return
    assert op in CPU, f"op {op!r} has no CPU template"
    assert op in CUDA, f"op {op!r} has no CUDA template"
    if spec.elementwise and op != "fused":
        assert spec.scalar_cpu is not None and spec.scalar_cuda is not None
        assert spec.vjp is not None or not spec.differentiable, f"elementwise op {op!r} has no VJP"


def test_op_sets_come_from_the_table():
    from rnnc.autodiff.grad import NO_GRAD
    from rnnc.backends.cpu.render import ALIAS_READERS, LEAF_OPS, ROW_LOCAL_OPS
    from rnnc.backends.cuda.ops import REUSED
    from rnnc.passes.fuse import ARITHMETIC, FUSABLE

    assert set(LEAVES) == set(LEAF_OPS) == {"input", "param", "lengths", "const"}
    assert {"add", "mul", "tanh", "sigmoid", "where", "slice", "expand", "softplus", "pow"} <= set(FUSABLE)
    assert "fused" not in FUSABLE and "matmul" not in FUSABLE
    assert {"add", "sub", "mul", "neg", "square", "positive", "slice", "expand"} <= set(ARITHMETIC)
    assert not {"exp", "tanh", "div", "softplus"} & set(ARITHMETIC)
    assert {"fused", "matmul", "concat", "ref", "embedding", "layer_norm"} | set(FUSABLE) <= set(ROW_LOCAL_OPS)
    assert set(ALIAS_READERS) == set(FUSABLE) | {"fused"}
    assert set(NO_GRAD) == {"const", "lengths", "step_mask", "one_hot", "positive", "max_mask"}
    assert {"softmax", "transpose", "fused", "tanh", "embedding", "layer_norm"} <= set(REUSED)
    assert not {"matmul", "conv2d", "sum_to", "embedding_grad"} & set(REUSED)


@pytest.mark.parametrize("op", scalar_ops())
def test_scalar_form_equals_numpy_reference(op):
    """The tree the backends render, evaluated with numpy, equals the op's own numpy reference."""
    spec = OPS[op]
    rng = np.random.default_rng(1)
    arrays = [rng.uniform(0.5, 2.0, size=(4, 3)) for _ in range(spec.arity)]
    if op not in ("log", "sqrt", "pow"):
        arrays[0] = arrays[0] * rng.choice([-1.0, 1.0], size=(4, 3))
    if op == "clip":
        arrays[1:] = [np.full((4, 3), -0.7), np.full((4, 3), 1.1)]

    class View:
        lead = 1

    got = S.evaluate(spec.scalar_cpu, arrays)
    want = spec.numpy(View(), *arrays)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12)


def test_scalar_ops_compiled_equal_interpreter():
    m, inputs, params, f = _compiled("scalar", scalar_model, scalar_data)
    assert_matches_interpreter(f, m, inputs, params, **OP_TOL)


def test_scalar_ops_are_fused_into_their_scans():
    m, inputs, params, f = _compiled("scalar", scalar_model, scalar_data)
    graph = f.kernel("outputs").graph
    fused_ops = {op for n in graph.nodes if n.op == "fused" for op, *_ in n.attr("prog")}
    assert set(scalar_ops()) <= fused_ops | {n.op for n in graph.nodes}
    left = sorted(n.op for n in graph.nodes if n.op in set(scalar_ops()))
    assert not left, f"not fused: {left}"


def test_scalar_ops_gradients_equal_finite_differences():
    m, inputs, params, _ = _compiled("scalar", scalar_model, scalar_data)
    errors = check_param_grads(m, inputs, params)
    bad = {k: e for k, e in errors.items() if e > 1e-6}
    assert not bad, bad


def test_lookup_and_layer_norm_compiled_equal_interpreter_and_finite_differences():
    m, inputs, params, f = _compiled("lookup", lookup_model, lookup_data)
    assert_matches_interpreter(f, m, inputs, params, **OP_TOL)
    _, grads = f.loss_and_grad(inputs, params)
    assert np.abs(grads["E"][np.setdiff1d(np.arange(5), inputs["tok"])]).max(initial=0.0) == 0.0
    errors = check_param_grads(m, inputs, params)
    assert max(errors.values()) < 1e-6, errors


def test_embedding_indices_are_range_checked_at_the_boundary():
    m, inputs, params, f = _compiled("lookup", lookup_model, lookup_data)
    bad = dict(inputs, tok=inputs["tok"].copy())
    bad["tok"][1, 0] = 5
    with pytest.raises(rc.InputError, match="embedding"):
        rc.interpret(m, bad, params)
    with pytest.raises(rc.InputError, match="embedding"):
        f.forward(bad, params)


def test_layer_norm_numpy_rule():
    m = rc.Model("ln")
    x = m.input("x", 4)
    g, b = m.param("g", 4), m.param("b", 4)
    m.output("y", rc.layer_norm(x[rc.t], g, b, eps=1e-3))
    rng = np.random.default_rng(0)
    xs, gs, bs = rng.normal(size=(2, 3, 4)), rng.normal(size=4), rng.normal(size=4)
    y = rc.interpret(m, {"x": xs}, {"g": gs, "b": bs}).outputs["y"]
    mu, var = xs.mean(-1, keepdims=True), xs.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (xs - mu) / np.sqrt(var + 1e-3) * gs + bs, rtol=1e-12)


def test_a_missing_rule_is_an_error_naming_the_op():
    with pytest.raises(ValueError, match="'ewise_without_form'.*no scalar form"):
        register("ewise_without_form", lambda i, a: (i[0].shape, "float"), lambda n, x: x, elementwise=True)
    assert "ewise_without_form" not in OPS
    with pytest.raises(TypeError, match="unknown property"):
        register("bad_property", lambda i, a: ((), "float"), lambda n: 0, fusible=True)
    with pytest.raises(TypeError, match="unknown property"):
        ops_with(fusible=True)
    from rnnc.ops import make

    register("no_vjp_op", lambda i, a: (i[0].shape, "float"), lambda n, x: x)
    try:
        m = rc.Model("no_vjp")
        x, y, w = m.input("x", 2), m.input("y", 2), m.param("w", 2)
        m.loss(rc.mse(make("no_vjp_op", [w * x[rc.t]]), y[rc.t]))
        with pytest.raises(rc.GraphError, match="'no_vjp_op'"):
            rc.grad(m)
    finally:
        del OPS["no_vjp_op"]
