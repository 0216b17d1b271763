"""Generated source speaks the user's names (issue 21): a value's variable carries its name (``v12_h``), and the
comment line over its code names it in the code's own variables, then the user's ``file:line`` and source line.

Modules are cached by structure (names included, locations not), so the locations are added when ``f.source`` is
read: a model whose lines moved is a cache hit and still shows its own lines.
"""
from __future__ import annotations

import io
import re
import runpy
import tokenize

import numpy as np
import pytest

import rnnc as rc

ELMAN = '''import rnnc as rc
from rnnc import t

m = rc.Model("elman")
x = m.input("x", 3)
y = m.input("y", (), dtype="int64")
U = m.param("U", (5, 3))
W = m.param("W", (5, 5))
b = m.param("b", 5, init="zeros")
V = m.param("V", (2, 5))
c = m.param("c", 2, init="zeros")
STATE = m.signal("STATE", 5)
STATE[t] = rc.tanh(U @ x[t] + W @ STATE[t-1] + b)
o = V @ STATE[t] + c
m.output("o", o)
m.loss(rc.softmax_cross_entropy(o, y[t]))
'''
#: a comment line naming a value: ``# <var> = <expression>   <file>:<line>  <source line>``
NOTE = re.compile(r"^ *# (?P<var>[a-z]+\d+\w*) = (?P<expr>.*?)   (?P<file>[\w.]+):(?P<line>\d+)  (?P<text>.*)$")


def _code_names(source: str) -> set:
    return {tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.NAME}


def _model(path, state: str = "h", blank_lines: int = 0):
    path.write_text("\n" * blank_lines + ELMAN.replace("STATE", state))
    return runpy.run_path(str(path))["m"]


def _compile(m):
    return rc.compile(m, dtype="float64")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _state_note(source: str, state: str = "h") -> re.Match:
    notes = [NOTE.match(ln) for ln in source.splitlines()]
    found = [n for n in notes if n and re.fullmatch(rf"v\d+_{state}", n["var"])]
    assert found, f"no comment names v<N>_{state}"
    return found[0]


def test_state_variable_and_comment_speak_the_users_names(cache):
    path = cache / "elman.py"
    f = _compile(_model(path))
    src = f.source
    note = _state_note(src)
    line = ELMAN.splitlines().index("STATE[t] = rc.tanh(U @ x[t] + W @ STATE[t-1] + b)") + 1
    assert (note["file"], int(note["line"])) == ("elman.py", line)
    assert note["text"] == "h[t] = rc.tanh(U @ x[t] + W @ h[t-1] + b)"
    assert note["expr"].startswith("tanh(") and re.search(r"\bp\d+_b\b", note["expr"])
    code = _code_names(src)
    assert note["var"] in code                                         # the code writes the commented variable
    used = set(re.findall(r"\b[a-z]+\d+\w*\b", note["expr"]))
    assert used and used <= code, used - code                          # the comment reads the code's variables
    assert re.search(rf"\b{note['var']}\[i0, ib, f0\] = ", src)      # ... and its own line assigns it
    for leaf in ("x", "U", "W", "b"):
        assert re.search(rf"\b[xp]\d+_{leaf}\b", src), leaf
    assert str(path) not in src                                         # the file's basename only


def test_source_is_python_that_runs(cache):
    f = _compile(_model(cache / "elman.py"))
    shown = cache / "shown.py"                      # Numba's cache=True wants a file
    shown.write_text(f.source)
    namespace = runpy.run_path(str(shown))
    assert callable(namespace["run"]) and namespace["META"]["args"][:2] == ["n0", "nb"]
    rng = np.random.default_rng(0)
    m = _model(cache / "elman.py")
    X, Y = rng.normal(size=(4, 2, 3)), rng.integers(0, 2, size=(4, 2))
    P = m.init_params(seed=0, dtype="float64")
    want = rc.interpret(m, {"x": X, "y": Y}, P, dtype="float64")
    np.testing.assert_allclose(f.forward({"x": X, "y": Y}, P).loss, want.loss, rtol=1e-10)


def test_moved_lines_hit_the_cache_and_show_their_new_lines(cache):
    """(a) ``f.source`` shows the current model's lines; (b) a blank line at the top of the model's file moves
    every line but compiles nothing again."""
    path = cache / "elman.py"
    first = _compile(_model(path))
    before = int(_state_note(first.source)["line"])
    assert first.stats["loss"]["cache_hit"] is False
    moved = _compile(_model(path, blank_lines=1))
    note = _state_note(moved.source)                                   # (the kernel is made on first use)
    assert moved.stats["loss"]["cache_hit"] is True                    # the same cached module
    assert int(note["line"]) == before + 1
    assert note["text"] == "h[t] = rc.tanh(U @ x[t] + W @ h[t-1] + b)"
    assert int(_state_note(first.source)["line"]) == before          # each compiled object its own lines


def test_models_differing_only_in_names_show_their_own(cache):
    """(c) two models identical but for the state's name: each source shows its own name, never the other's."""
    f_h = _compile(_model(cache / "elman.py", "h"))
    f_s = _compile(_model(cache / "other.py", "s"))
    assert _state_note(f_s.source, "s")["file"] == "other.py"
    assert not re.search(r"\bv\d+_h\b", f_s.source) and "h[t" not in f_s.source
    assert not re.search(r"\bv\d+_s\b", f_h.source) and "s[t" not in f_h.source
    assert f_h.kernel("loss").path != f_s.kernel("loss").path


def test_names_that_are_no_plain_identifier_stay_in_comments(cache):
    path = cache / "odd.py"
    path.write_text(ELMAN.replace('"STATE"', '"τ"').replace("STATE", "tau"))
    src = _compile(runpy.run_path(str(path))["m"]).source
    assert "τ" not in _code_names(src) and not re.search(r"\bv\d+_τ", src)
    assert "'\\u03c4'" in src or "'τ'" in src                           # the name, escaped, in a comment
    assert re.search(r"   odd\.py:\d+  tau\[t\] = rc\.tanh", src)


def test_a_product_comment_names_the_array_its_code_reads(cache):
    """A step product reads a transposed copy of ``W`` made once per call (``u<k>_W``): its comment says so, so
    every variable the comment names is one the next line of code reads or writes."""
    src = _compile(_model(cache / "elman.py")).kernel("grad").source
    lines = src.splitlines()
    products = [(k, m) for k, ln in enumerate(lines) if (m := re.search(r"reading (\w+) = (\w+)\^T", ln))]
    assert products, "no product reads a transposed operand"
    for k, m in products:
        code = next(ln for ln in lines[k + 1:] if not ln.lstrip().startswith(("#", "threads_ = ")))
        note = NOTE.match(lines[k]) or re.match(r"^ *# (?P<var>\w+) = (?P<expr>.*)$", lines[k])
        assert re.search(rf"\b{m[1]}\b", code), (lines[k], code)          # the array the code really reads
        assert re.search(rf"\b{note['var']}\b", code), (lines[k], code)   # ... and the one it writes


def test_gradient_lines_point_at_the_users_equation_not_the_compile_call(cache):
    """rnnc's own nodes (the adjoint equations, the loss's sums) take the line of the user's node they come
    from: the backward of ``h[t] = tanh(...)`` points at that line, never at this test's ``rc.compile`` call."""
    src = _compile(_model(cache / "elman.py")).kernel("grad").source
    here = __file__.rsplit("/", 1)[-1]
    located = [ln for ln in src.splitlines() if re.search(r"   [\w.]+:\d+", ln)]
    assert located and not [ln for ln in located if here in ln]
    state_line = ELMAN.splitlines().index("STATE[t] = rc.tanh(U @ x[t] + W @ STATE[t-1] + b)") + 1
    loss_line = ELMAN.splitlines().index("m.loss(rc.softmax_cross_entropy(o, y[t]))") + 1
    backward = [ln for ln in located if re.search(r"# \w*d_h\w* = ", ln)]        # d_h, d_h_tm1
    assert backward and all(f"elman.py:{state_line} " in ln for ln in backward), backward
    sums = [ln for ln in located if re.search(r"= (asum|batch_mean)\(", ln)]
    assert sums and all(f"elman.py:{loss_line} " in ln for ln in sums), sums
