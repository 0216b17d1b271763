"""No name a user gives rnnc runs as code (issue 18, part 3).

Every string that can reach generated code (the model's name, axis names, input / param / signal / output names)
follows one rule (an identifier, no keyword, no leading ``__``), checked where it is declared and again when a
graph is keyed or rendered, so a name changed or forged afterwards is refused too. Generated code's identifiers
are rnnc's own, or rnnc's own prefix and number followed by a checked plain-ASCII name (``v12_h``); any name
appears in comments and the module docstring only as a one-line escaped ``repr()``.
"""
from __future__ import annotations

import ast
import io
import os
import re
import tokenize

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import rnnc as rc
from rnnc.backends.cpu.render import Renderer
from rnnc.ir.names import LINE_BREAKS, code_name, is_name, safe_comment
from rnnc.runtime.graph_key import graph_key

HERE = os.path.basename(__file__)

#: names that must never reach generated code as they are
PAYLOADS = [
    "q\nraise SystemExit(77)\n#",                                    # the axis name
    'x""" if __import__("os").system("exit 77") else """',           # the model name
    "a\rb", "a'b", 'a"b', '"""', "'''", "a#b", "a b", "", "1x", "x-y", "a.b", "x[0]",
    '__import__("os").system("exit 77")', "__class__", "__init__",
    "class", "None", "lambda", "import",                            # keywords
    "h€", "naïve-x", "\u00a0x",                                      # non-ASCII, not identifiers
    "x\u2028raise SystemExit(77)", "x\u2029y", "x\x85y", "x\x0by", "x\x0cy", "x\x1cy", "x\x1dy", "x\x1ey",
    "x\x00y", "x\u202ey",                                            # NUL, a bidi override
]
#: names that follow the rule although they look odd: accepted, and harmless
ODD_BUT_VALID = ["ñame", "τ", "höhe", "match", "case", "_", "type", "Ωmega_2"]


def _output(name: str):
    m = rc.Model("m")
    x = m.input("x", 2)
    return m.output(name, x[rc.t])


#: every place a user declares a name: (what the error calls it, declare(name))
SITES = {
    "model": ("model", lambda n: rc.Model(n)),
    "Axis": ("axis", lambda n: rc.Axis(n)),
    "axes": ("axis", lambda n: rc.axes("ok", n)),
    "input": ("input", lambda n: rc.Model("m").input(n, 2)),
    "param": ("param", lambda n: rc.Model("m").param(n, (2, 2))),
    "signal": ("signal", lambda n: rc.Model("m").signal(n, 2)),
    "output": ("output", _output),
    "model.name =": ("model", lambda n: setattr(rc.Model("m"), "name", n)),
}


def _marker_payloads(marker) -> list[str]:
    return [f"x\nopen({str(marker)!r}, 'w').close()\n#", f"x\"\"\"\nopen({str(marker)!r}, 'w').close()\n\"\"\""]


def _refused(declare, name, what: str) -> None:
    with pytest.raises(ValueError) as info:
        declare(name)
    msg = str(info.value)
    assert not any(c in msg for c in LINE_BREAKS), msg                   # one line
    assert msg.startswith(f"{what} name ") and "not a valid Python identifier" in msg, msg
    assert HERE in msg, msg                                              # the user's file:line


@pytest.mark.parametrize("site", SITES)
def test_bad_names_are_refused_where_declared(site, tmp_path):
    what, declare = SITES[site]
    marker = tmp_path / "ran"
    for name in PAYLOADS + _marker_payloads(marker) + [123, None, b"x"]:
        _refused(declare, name, what)
    assert not marker.exists()


@pytest.mark.parametrize("site", SITES)
def test_odd_but_valid_names_are_accepted(site):
    for name in ODD_BUT_VALID:
        SITES[site][1](name)


#: text with every kind of line break, quotes, and anything else hypothesis draws
NAMES = st.text(st.one_of(st.sampled_from(sorted(LINE_BREAKS) + list("\"'#\\_ ")), st.characters()), max_size=12)


@given(site=st.sampled_from(sorted(SITES)), name=NAMES)
def test_drawn_names_are_refused_or_follow_the_rule(site, name):
    what, declare = SITES[site]
    if is_name(name):
        declare(name)
        assert name.isidentifier() and not any(c in name for c in LINE_BREAKS)
    else:
        _refused(declare, name, what)


@given(text=NAMES)
def test_safe_comment_is_one_line_that_cannot_end_a_string(text):
    safe = safe_comment(text)
    assert safe.isprintable() and '"' not in safe and not any(c in safe for c in LINE_BREAKS)
    tree = ast.parse(f'"""model {safe} (float32)."""\nx = 1  # {safe}\n# {safe}\n')
    assert [type(s).__name__ for s in tree.body] == ["Expr", "Assign"]
    assert ast.literal_eval(safe) == text                            # still a literal of the name
    if text.isidentifier():
        assert safe_comment(text, bare=True) == text


# ----------------------------------------------------------------------------- names changed after declaration


def _tiny(name: str = "tiny", axis=None, names=("x", "h", "o")):
    a = axis if axis is not None else rc.t
    m = rc.Model(name)
    x = m.input(names[0], 2, axes=(a,))
    h = m.signal(names[1], 2)
    h[a] = rc.tanh(x[a] + h[a - 1] * 0.5)
    m.output(names[2], h[a])
    return m


def _forged(kind: str, payload: str):
    """A model whose ``kind`` of name was replaced by ``payload`` after it was checked."""
    if kind == "model":
        m = _tiny()
        m._name = payload                                  # past the checking setter of m.name
        return m
    if kind == "axis":
        (i,) = rc.axes("i")
        m = _tiny(axis=i)
        object.__setattr__(i, "name", payload)             # Axis is frozen: only a forger gets here
        return m
    m = _tiny()
    g = m.graph
    if kind == "node":
        object.__setattr__(g.inputs["x"], "name", payload)
    elif kind == "output":
        g.outputs[payload] = g.outputs.pop("o")
    elif kind == "graph":
        object.__setattr__(g, "name", payload)
    return m


FORGED = {"model": "model", "axis": "axis", "node": "input node", "output": "output", "graph": "model"}


@pytest.mark.parametrize("kind", FORGED)
def test_forged_names_are_refused_when_compiled(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path / "cache"))
    marker = tmp_path / "ran"
    for payload in PAYLOADS[:2] + _marker_payloads(marker) + ["x\u2028raise SystemExit(77)"]:
        m = _forged(kind, payload)
        for check in (lambda m: rc.compile(m, dtype="float64").source,    # keyed (the cache-hit path)
                      lambda m: graph_key(m.graph, "float64"),
                      lambda m: Renderer(m.graph, "float64")):            # rendered
            with pytest.raises(ValueError, match=f"^{FORGED[kind]} name ") as info:
                check(m)
            assert not any(c in str(info.value) for c in LINE_BREAKS)
    assert not marker.exists()
    assert not list((tmp_path / "cache").glob("rnnc_*.py"))             # nothing was written


def test_the_cuda_renderer_checks_names_too():
    pytest.importorskip("numba.cuda")
    from rnnc.backends.cuda.render import CudaRenderer

    with pytest.raises(ValueError, match="^axis name "):
        CudaRenderer(_forged("axis", "q\nraise SystemExit(77)\n#").graph, "float32")


def test_names_cannot_be_changed_in_place():
    m = _tiny()
    with pytest.raises(ValueError, match="^model name "):
        m.name = 'x""" if __import__("os").system("exit 77") else """'
    assert m.name == "tiny"
    m.name = "renamed"                                     # a valid new name: the graph follows it
    assert m.graph.name == "renamed"
    for frozen in (rc.t, m.graph.inputs["x"]):
        with pytest.raises(AttributeError):
            frozen.name = "y"


# ----------------------------------------------------------------------------- what generated code holds


def _names_in_code(source: str) -> set:
    """Identifiers of ``source`` (comments and strings left out)."""
    return {tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.NAME}


def _check_source(source: str, names) -> None:
    assert source.splitlines() == source.split("\n")[:len(source.splitlines())]   # "\n" the only line break
    ast.parse(source)
    assert not set(names) & _names_in_code(source), "a user's name is used as an identifier"


def _mapped(source: str, ref: str, names) -> None:
    """Every identifier of ``source`` is rnnc's own (one of ``ref``'s: the same model with names that are never
    spelled into code) or ``<rnnc's own prefix and number>_<name>`` for a checked plain-ASCII ``name``; taking
    the ``_<name>`` off gives back exactly ``ref``'s identifiers."""
    own, spelled = _names_in_code(ref), sorted({n for n in names if code_name(n)}, key=len, reverse=True)
    pattern = re.compile(rf"([a-z]+\d+)_({'|'.join(map(re.escape, spelled))})") if spelled else None
    back = set()
    for ident in _names_in_code(source):
        match = pattern.fullmatch(ident) if pattern and ident not in own else None
        assert ident in own or match, f"{ident!r} is neither rnnc's own nor a prefixed checked name"
        back.add(match[1] if match else ident)
    assert back == own, "a user's name decides an identifier other than through the prefixed mapping"


ASCII_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,7}", fullmatch=True).filter(is_name)


@given(names=st.lists(st.one_of(st.text(st.characters(), min_size=1, max_size=6).filter(is_name), ASCII_NAMES),
                      min_size=5, max_size=5, unique=True))
@example(names=["A", "B", "C", "D", "e0"])   # e0 is also one of rnnc's own identifiers
@example(names=["τ", "ñame", "b0_", "x" * 30, "stage_2"])   # non-ASCII, an own suffix, too long, an own name
@settings(deadline=None)
def test_drawn_valid_names_decide_identifiers_only_through_the_mapping(names):
    model, axis, x, h, o = names
    (a,) = rc.axes(axis)
    m = _tiny(model, axis=a, names=(x, h, o))
    source = Renderer(m.graph, "float64").render().source
    assert source.splitlines() == source.split("\n")[:len(source.splitlines())]
    ast.parse(source)
    (ref_axis,) = rc.axes("μaxis")
    ref = Renderer(_tiny("μmodel", axis=ref_axis, names=("μx", "μh", "μo")).graph, "float64").render().source
    _mapped(source, ref, names)
    assert source.startswith(f'"""Generated by rnnc for model {safe_comment(model)} (float64).')
    for name in (x, h):                       # the output is h itself here: h's buffer
        assert (f"_{name}" in source) == bool(code_name(name))


def test_cuda_source_decides_identifiers_only_through_the_mapping():
    pytest.importorskip("numba.cuda")
    from rnnc.backends.cuda.render import CudaRenderer

    names = ["mdl", "k", "xs", "hid", "out"]
    (a,) = rc.axes("k")
    source = CudaRenderer(_tiny("mdl", axis=a, names=("xs", "hid", "out")).graph, "float32").render().source
    (ref_axis,) = rc.axes("μaxis")
    ref = CudaRenderer(_tiny("μmodel", axis=ref_axis, names=("μx", "μh", "μo")).graph, "float32").render().source
    ast.parse(source)
    _mapped(source, ref, names)
    assert "_hid" in source and "_xs" in source


def test_odd_names_compile_and_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path))
    (a,) = rc.axes("τ")
    m = _tiny("modèle", axis=a, names=("ñame", "höhe", "Ωut"))
    f = rc.compile(m, dtype="float64")
    _check_source(f.source, ["modèle", "τ", "ñame", "höhe", "Ωut"])
    assert "'höhe[τ-1]'" in f.source and "scan over τ" in f.source
    x = np.random.default_rng(0).normal(size=(3, 2, 2))
    got = f.forward({"ñame": x}, {}, sizes={"τ": 3}).outputs["Ωut"]
    want = rc.interpret(m, {"ñame": x}, {}, sizes={"τ": 3}, dtype="float64").outputs["Ωut"]
    np.testing.assert_allclose(got, want, rtol=1e-12)
