"""Every DSL mistake of issue 2 raises the documented error, naming the thing at fault and quoting this
file's own ``file:line`` where the bad expression was written."""
import inspect
import re

import pytest

import rnnc as rc
from rnnc import t

HERE = __file__


def next_line() -> int:
    """The line number right after the caller's line: put the bad expression there."""
    return inspect.currentframe().f_back.f_lineno + 1


def at(line: int) -> str:
    return f"{HERE}:{line}"


def _model(X=3, H=4):
    m = rc.Model("m")
    return m, m.input("x", X), m.param("W", (H, H)), m.param("U", (H, X)), m.signal("h", H)


# ----------------------------------------------------------------------------- algebraic loops


def test_algebraic_loop_between_two_signals_lists_every_node_with_lines():
    m, x, W, U, h = _model()
    g = m.signal("g", 4)
    line_h = next_line()
    h[t] = rc.tanh(W @ g[t] + U @ x[t])
    line_g = next_line()
    g[t] = rc.sigmoid(W @ h[t])
    with pytest.raises(rc.CycleError) as err:
        rc.schedule(m)
    msg = str(err.value)
    assert "algebraic loop" in msg
    rows = [r.strip() for r in msg.splitlines()[1:]]
    # the cycle: h = tanh(... W @ g[t] ...) -> read h[t] -> W @ h -> g = sigmoid -> read g[t] -> W @ g
    ops = sorted(re.search(r"\((\w+)\) at", r).group(1) for r in rows)
    assert ops == sorted(["tanh", "add", "matmul", "ref", "sigmoid", "matmul", "ref"])
    assert all(r.endswith(at(line_h)) or r.endswith(at(line_g)) for r in rows), msg
    assert any(r.startswith("h (tanh)") and r.endswith(at(line_h)) for r in rows), msg
    assert any(r.startswith("g (sigmoid)") and r.endswith(at(line_g)) for r in rows), msg


def test_signal_reading_itself_at_the_same_step_is_an_algebraic_loop():
    m, x, W, U, h = _model()
    line = next_line()
    h[t] = rc.tanh(W @ h[t] + U @ x[t])
    with pytest.raises(rc.CycleError, match=re.escape(at(line))) as err:
        rc.interpret(m, {}, {})
    assert "h (tanh)" in str(err.value) and "h (ref)" in str(err.value)


# ----------------------------------------------------------------------------- shapes


def test_matmul_shape_mismatch_names_op_shapes_and_line():
    m, x, W, U, h = _model()
    line = next_line() + 1
    with pytest.raises(rc.ShapeError) as err:
        W @ x[t]
    msg = str(err.value)
    assert msg.startswith("matmul")
    assert "(4, 4)" in msg and "(3,)" in msg and "W" in msg and "x" in msg
    assert msg.endswith(at(line))


def test_elementwise_shape_mismatch():
    m, x, W, U, h = _model()
    line = next_line() + 1
    with pytest.raises(rc.ShapeError) as err:
        rc.tanh(U @ x[t]) * x[t]
    msg = str(err.value)
    assert msg.startswith("mul") and "(4,)" in msg and "(3,)" in msg and msg.endswith(at(line))


def test_equation_shape_differs_from_signal_shape():
    m, x, W, U, h = _model()
    line = next_line() + 1
    with pytest.raises(rc.ShapeError) as err:
        h[t] = rc.tanh(x[t])
    msg = str(err.value)
    assert "'h'" in msg and "(4,)" in msg and "(3,)" in msg and msg.endswith(at(line))


def _shape_error_cases(m, x, h, P):
    """Each case gives (name, its line, a thunk raising the error)."""
    line = inspect.currentframe().f_lineno
    yield "concat", line + 1, lambda: rc.concat([x[t], P])
    yield "loss", line + 2, lambda: m.loss(h[t])
    yield "initial", line + 3, lambda: m.initial(h, m.param("h0", 3))
    yield "cross_entropy", line + 4, lambda: rc.softmax_cross_entropy(h[t], x[t])


@pytest.mark.parametrize("bad", ["concat", "loss", "initial", "cross_entropy"])
def test_other_shape_errors_quote_the_line(bad):
    m, x, W, U, h = _model()
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1])
    P = m.param("P", (2, 2))
    ((_, line, thunk),) = [c for c in _shape_error_cases(m, x, h, P) if c[0] == bad]
    with pytest.raises(rc.ShapeError) as err:
        thunk()
    assert str(err.value).endswith(f"{HERE}:{line}"), str(err.value)


# ----------------------------------------------------------------------------- structure


def test_signal_never_defined_names_signal_declaration_and_reads():
    m = rc.Model("m")
    x = m.input("x", 3)
    line_decl = next_line()
    h = m.signal("h", 3)
    line_read = next_line()
    m.output("o", h[t - 1] + x[t])
    with pytest.raises(rc.GraphError) as err:
        rc.schedule(m)
    msg = str(err.value)
    assert "'h'" in msg and "never defined" in msg and at(line_decl) in msg and at(line_read) in msg


def test_signal_defined_twice_names_both_lines():
    m, x, W, U, h = _model()
    line1 = next_line()
    h[t] = rc.tanh(U @ x[t])
    line2 = next_line() + 1
    with pytest.raises(rc.GraphError) as err:
        h[t] = rc.sigmoid(U @ x[t])
    msg = str(err.value)
    assert "'h'" in msg and "twice" in msg and at(line1) in msg and at(line2) in msg


def test_signal_indexed_on_an_axis_it_lacks_after_definition():
    (i,) = rc.axes("i")
    m, x, W, U, h = _model()
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1])
    line = next_line() + 1
    with pytest.raises(rc.GraphError) as err:
        h[i]
    msg = str(err.value)
    assert "'h'" in msg and "(t)" in msg and "(i)" in msg and msg.endswith(at(line))


def test_signal_indexed_on_an_axis_it_lacks_before_definition():
    (i,) = rc.axes("i")
    m, x, W, U, h = _model()
    line = next_line()
    m.output("o", h[i - 1])
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1])
    with pytest.raises(rc.GraphError) as err:
        rc.schedule(m)
    msg = str(err.value)
    assert "'h'" in msg and "(i)" in msg and at(line) in msg


def test_input_indexed_on_an_axis_it_lacks():
    (i,) = rc.axes("i")
    m, x, W, U, h = _model()
    line = next_line() + 1
    with pytest.raises(rc.GraphError) as err:
        x[i]
    assert "'x'" in str(err.value) and str(err.value).endswith(at(line))


def test_recurrence_in_both_directions_in_one_signal():
    m, x, W, U, h = _model()
    line = next_line()
    h[t] = rc.tanh(W @ h[t - 1] + W @ h[t + 1] + U @ x[t])
    with pytest.raises(rc.GraphError) as err:
        rc.schedule(m)
    msg = str(err.value)
    assert not isinstance(err.value, rc.CycleError)
    assert "both directions" in msg and "t-" in msg and "t+" in msg
    assert "h[t-1] (ref)" in msg and "h[t+1] (ref)" in msg and at(line) in msg


def test_recurrence_in_both_directions_across_two_signals():
    m, x, W, U, h = _model()
    g = m.signal("g", 4)
    line_h = next_line()
    h[t] = rc.tanh(W @ g[t - 1] + U @ x[t])
    line_g = next_line()
    g[t] = rc.tanh(W @ h[t + 1])
    with pytest.raises(rc.GraphError) as err:
        rc.interpret(m, {}, {})
    msg = str(err.value)
    assert "both directions" in msg and "g[t-1]" in msg and "h[t+1]" in msg
    assert at(line_h) in msg and at(line_g) in msg


def test_reduction_over_the_axis_inside_its_own_recurrence():
    m, x, W, U, h = _model()
    g = m.signal("g", 4, axes=(t,))
    line = next_line()
    h[t] = rc.tanh(U @ x[t] + W @ rc.sum(g, t))
    g[t] = rc.tanh(W @ h[t - 1])
    with pytest.raises(rc.GraphError) as err:
        rc.schedule(m)
    assert "reduces over t inside the recurrence along t" in str(err.value) and at(line) in str(err.value)


def test_left_side_must_not_be_shifted():
    m, x, W, U, h = _model()
    line = next_line() + 1
    with pytest.raises(rc.GraphError) as err:
        h[t - 1] = U @ x[t]
    assert "h" in str(err.value) and str(err.value).endswith(at(line))


def test_values_on_unrelated_axes_do_not_mix():
    (i,) = rc.axes("i")
    m, x, W, U, h = _model()
    z = m.input("z", 3, axes=(i,))
    line = next_line() + 1
    with pytest.raises(rc.GraphError) as err:
        x[t] + z[i]
    assert "x[t]" in str(err.value) and "z[i]" in str(err.value) and str(err.value).endswith(at(line))


def test_initial_value_must_be_axis_free():
    m, x, W, U, h = _model()
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1])
    line = next_line() + 1
    with pytest.raises(rc.GraphError) as err:
        m.initial(h, U @ x[t])
    assert "'h'" in str(err.value) and str(err.value).endswith(at(line))


def test_name_reused_across_kinds():
    m, x, W, U, h = _model()
    line = next_line() + 1
    with pytest.raises(rc.GraphError) as err:
        m.param("x", 3)
    assert "'x'" in str(err.value) and at(line) in str(err.value)


# ----------------------------------------------------------------------------- names


def _declare(what, bad):
    m = rc.Model("m")
    line = inspect.currentframe().f_lineno
    yield "input", line + 1, lambda: m.input(bad, 3)
    yield "param", line + 2, lambda: m.param(bad, 3)
    yield "signal", line + 3, lambda: m.signal(bad, 3)
    yield "output", line + 4, lambda: m.output(bad, m.param("p", 2))
    yield "model", line + 5, lambda: rc.Model(bad)
    yield "axis", line + 6, lambda: rc.axes(bad)


@pytest.mark.parametrize("what,bad", [("input", "1x"), ("param", "my param"), ("signal", "class"),
                                      ("output", "o-1"), ("model", "a-b"), ("axis", "for"),
                                      ("input", "__x"), ("param", "")])
def test_invalid_names_refused_at_declaration(what, bad):
    ((_, line, thunk),) = [c for c in _declare(what, bad) if c[0] == what]
    with pytest.raises(ValueError) as err:
        thunk()
    msg = str(err.value)
    assert msg.startswith(f"{what} name {bad!r}") and "identifier" in msg and msg.endswith(f"{HERE}:{line}")


def test_lengths_input_name_must_be_free():
    m = rc.Model("m")
    m.input("x_lengths", 2)
    with pytest.raises(rc.GraphError, match="x_lengths"):
        m.input("x", 3, lengths=True)
