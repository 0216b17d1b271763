"""Drawings: folded and unrolled models through Graphviz (rnnc.viz)."""
import importlib
import re
import shutil

import pytest

import rnnc as rc
from rnnc import t
from rnnc.viz import render, to_dot

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


def elman(X=3, H=4, O=2):
    m = rc.Model("elman")
    x = m.input("x", X)
    y = m.input("y", (), dtype="int")
    U, W, V = m.param("U", (H, X)), m.param("W", (H, H)), m.param("V", (O, H))
    b, c = m.param("b", H, init="zeros"), m.param("c", O, init="zeros")
    h = m.signal("h", H)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + b)
    o = V @ h[t] + c
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))
    return m


def renet(C=3, H=4):
    """The ReNet block: scan down / up along i, concat, scan right / left along j."""
    i, j = rc.axes("i", "j")
    m = rc.Model("renet")
    x = m.input("x", C, axes=(i, j))
    Ud, Wd, Uu, Wu = m.param("Ud", (H, C)), m.param("Wd", (H, H)), m.param("Uu", (H, C)), m.param("Wu", (H, H))
    Ur, Wr = m.param("Ur", (H, 2 * H)), m.param("Wr", (H, H))
    Ul, Wl = m.param("Ul", (H, 2 * H)), m.param("Wl", (H, H))
    down, up, v = m.signal("down", H), m.signal("up", H), m.signal("v", 2 * H)
    right, left = m.signal("right", H), m.signal("left", H)
    down[i, j] = rc.tanh(Ud @ x[i, j] + Wd @ down[i - 1, j])
    up[i, j] = rc.tanh(Uu @ x[i, j] + Wu @ up[i + 1, j])
    v[i, j] = rc.concat([down[i, j], up[i, j]])
    right[i, j] = rc.tanh(Ur @ v[i, j] + Wr @ right[i, j - 1])
    left[i, j] = rc.tanh(Ul @ v[i, j] + Wl @ left[i, j + 1])
    m.output("out", rc.concat([right[i, j], left[i, j]]))
    return m


def lstm(X=3, H=4, loss=False):
    m = rc.Model("lstm")
    x = m.input("x", X)
    h, c = m.signal("h", H), m.signal("c", H)
    W = {g: m.param("W" + g, (H, H + X)) for g in "fiog"}
    b = {g: m.param("b" + g, H, init="zeros") for g in "fiog"}
    z = rc.concat([h[t - 1], x[t]])
    f, i, o = (rc.sigmoid(W[g] @ z + b[g]) for g in "fio")
    g = rc.tanh(W["g"] @ z + b["g"])
    c[t] = f * c[t - 1] + i * g
    h[t] = o * rc.tanh(c[t])
    m.output("h_out", h[t])
    if loss:
        m.loss(rc.fsum(rc.square(h[t])))
    return m


def edges(source: str) -> list[tuple[str, str, str]]:
    """(tail label, head label, edge label) of a dot source from to_dot."""
    labels = {n: lab.strip('"') for n, lab in
              re.findall(r'^\s*(n\d+) \[label=("[^"]*"|[^\s\]]+)', source, re.M)}
    out = []
    for a, b, rest in re.findall(r"^\s*(n\d+) -> (n\d+)(.*)$", source, re.M):
        m = re.search(r'label=" ([^"]*) "', rest)
        out.append((labels[a], labels[b], m.group(1).removesuffix("\\n") if m else ""))
    return out


MODELS = {"elman": (elman, {"t": 3}), "renet": (renet, {"i": 2, "j": 3}), "lstm": (lstm, {"t": 3})}


@needs_dot
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_render_folded_and_unrolled(tmp_path, name, fmt):
    build, sizes = MODELS[name]
    m = build()
    for obj, stem in ((m, "folded"), (m.unroll(**sizes), "unrolled")):
        path = render(obj, tmp_path / f"{name}_{stem}.{fmt}")
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") if fmt == "png" else b"<svg" in data
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}_folded.{fmt}", f"{name}_unrolled.{fmt}"]


def test_folded_elman_is_the_lecture_figure():
    found = edges(to_dot(elman()).source)
    assert ("x", "h", "U") in found
    assert ("h", "h", "W, t-1") in found          # the recurrent back arc
    assert ("h", "o", "V") in found
    assert ("o", "L", "sum t") in found           # the loss is L, as in the lecture
    assert 't-1' in to_dot(elman()).source
    back = next(line for line in to_dot(elman()).source.splitlines() if "t-1" in line)
    assert "constraint=false" in back and "dashed" in back


def test_folded_lstm_and_renet_labels():
    found = edges(to_dot(lstm()).source)
    assert ("x", "c", "Wf, Wg, Wi") in found      # the nearest matrices on every path, not the biases
    assert ("c", "c", "t-1") in found
    assert ("h", "c", "Wf, Wg, Wi, t-1") in found
    assert ("h", "h_out", "") in found            # an output that is a bare read of h
    found = edges(to_dot(renet()).source)
    assert ("up", "up", "Wu, i+1") in found and ("left", "left", "Wl, j+1") in found
    assert ("v", "right", "Ur") in found


def test_unrolled_elman_has_the_lectures_nodes_and_edges():
    source = to_dot(elman().unroll(t=3)).source
    assert "layout=neato" in source and source.count("!\"") >= 15      # positions pinned by rnnc
    assert re.findall(r'label="(t = \d)"', source) == ["t = 0", "t = 1", "t = 2"]
    labels = {b for _, b, _ in edges(source)} | {a for a, _, _ in edges(source)}
    assert {"h[0]", "h[1]", "h[2]", "h[-1]", "x[0]", "o[2]"} <= labels
    found = edges(source)
    assert ("h[-1]", "h[0]", "W, t-1") in found and ("h[1]", "h[2]", "W, t-1") in found
    assert ("x[1]", "h[1]", "U") in found
    assert ("o[1]", "L[1]", "") in found and ("y[1]", "L[1]", "") in found and ("L[2]", "L", "") in found
    assert not re.search(r'label="?(@|\+|tanh)', source), "hidden ops are contracted away"


def test_unrolled_grid_labels_rows_and_columns():
    source = to_dot(renet().unroll(i=2, j=2)).source
    assert sorted(re.findall(r'label="([ij] = \d)"', source)) == ["i = 0", "i = 1", "j = 0", "j = 1"]
    found = edges(source)
    assert ("down[0,1]", "down[1,1]", "Wd, i-1") in found
    assert ("left[1,2]", "left[1,1]", "Wl, j+1") in found


def test_detail_draws_every_node():
    folded = to_dot(elman(), detail=True).source
    assert "tanh" in folded and 'label="@"' in folded and "label=W" in folded
    unrolled = to_dot(elman().unroll(t=2), detail=True).source
    assert unrolled.count('label="@"') == 6 and "label=U" in unrolled


def test_params_as_nodes():
    found = edges(to_dot(elman(), params=True).source)
    assert ("U", "h", "") in found and ("x", "h", "") in found


def test_gradient_style_model_draws_adjoints():
    m = rc.Model("adjoint")
    x = m.input("x", 3)
    W = m.param("W", (3, 3))
    h, d_h = m.signal("h", 3), m.signal("d_h", 3)
    h[t] = rc.tanh(W @ h[t - 1] + x[t])
    d_h[t] = h[t] + W @ d_h[t + 1]
    graph = m.graph.replace(grads={"W": rc.sum(d_h[t], t)})
    source = to_dot(graph).source
    assert ("d_h", "d_h", "W, t+1") in edges(source)
    assert "∂L/∂W" in source and "grad_W" not in source and "#f9dcc0" in source    # the adjoint look


def pattern2():
    """The lecture's pattern 2: the previous output feeds the hidden layer, written inline."""
    m = rc.Model("pattern2")
    x, y = m.input("x", 3), m.input("y", (), dtype="int")
    U, W, V = m.param("U", (4, 3)), m.param("W", (4, 2)), m.param("V", (2, 4))
    o = m.signal("o", 2)
    o[t] = V @ rc.tanh(U @ x[t] + W @ o[t - 1])
    m.loss(rc.softmax_cross_entropy(o[t], y[t]))
    return m


def test_inline_values_with_their_own_weights_are_drawn():
    found = edges(to_dot(pattern2()).source)
    assert ("x", "h", "U") in found and ("h", "o", "V") in found and ("o", "h", "W, t-1") in found
    m = rc.Model("jordan")
    x = m.input("x", 1)
    Wx, Uy, V = m.param("W", (5, 1)), m.param("U", (5, 1)), m.param("V", (1, 5))
    out = m.signal("out", 1)
    hidden = rc.tanh(Wx @ x[t] + Uy @ out[t - 1])     # named by the line's assignment
    out[t] = rc.sigmoid(V @ hidden)
    found = edges(to_dot(m).source)
    assert ("x", "hidden", "W") in found and ("hidden", "out", "V") in found and ("out", "hidden", "U, t-1") in found
    unrolled = edges(to_dot(pattern2().unroll(t=2)).source)
    assert ("x[1]", "h[1]", "U") in unrolled and ("h[1]", "o[1]", "V") in unrolled
    assert ("o[0]", "h[1]", "W, t-1") in unrolled
    assert "tanh" not in {a for a, _, _ in edges(to_dot(lstm()).source)}   # gates feed no weights: not drawn


def test_gradient_model_uses_the_lectures_names():
    found = edges(to_dot(rc.grad(elman())).source)
    labels = {a for a, _, _ in found} | {b for _, b, _ in found}
    assert {"δh", "∂L/∂W", "∂L/∂U", "L"} <= labels
    assert not [lab for lab in labels if lab.startswith(("d_", "grad_"))]
    assert ("δh", "δh", "Wᵀ, t+1") in found                 # δh[t] is fed by δh[t+1] through Wᵀ
    assert ("o", "δh", "Vᵀ") in found                        # and by ∂L/∂o through Vᵀ
    assert ("δh", "∂L/∂W", "") in found


def test_cells_collapse_an_lstm_gradient():
    source = to_dot(rc.grad(lstm(loss=True)), detail="cells").source
    found = edges(source)
    labels = {a for a, _, _ in found} | {b for _, b, _ in found}
    assert "h, c" in labels and "δh, δc" in labels
    assert ("δh, δc", "δh, δc", "t+1") in found and ("h, c", "h, c", "t-1") in found
    grads = next(lab for lab in labels if lab.startswith("∂L/∂ "))
    assert all(name in grads for name in ("Wf", "Wi", "Wo", "Wg"))
    with pytest.raises(ValueError, match="cells"):
        to_dot(lstm().unroll(t=2), detail="cells")
    with pytest.raises(ValueError, match="detail"):
        to_dot(lstm(), detail="gates")


@needs_dot
def test_drawings_fit_a_page():
    import json

    drawings = [(rc.grad(lstm(loss=True)), {"detail": "cells"}), (lstm(loss=True).unroll(t=4), {}),
                (renet().unroll(i=2, j=2), {}), (elman().unroll(t=30), {})]
    for obj, options in drawings:
        data = json.loads(to_dot(obj, **options).pipe(format="json"))
        width_pt = float(data["bb"].split(",")[2])
        assert width_pt * 96 / 72 <= 1600, (obj, width_pt)


def test_long_unroll_gives_a_dot_source_without_recursion():
    source = to_dot(elman().unroll(t=2000)).source     # far deeper than Python's recursion limit
    assert "h[1999]" in source and "h[-1]" in source


def test_long_unrolls_show_the_first_steps_an_ellipsis_and_the_last():
    source = to_dot(elman().unroll(t=50)).source
    labels = {a for a, _, _ in edges(source)} | {b for _, b, _ in edges(source)}
    assert {"h[0]", "h[1]", "h[2]", "h[49]", "⋯"} <= labels and "h[3]" not in labels
    assert ("h[2]", "⋯", "W, t-1") in edges(source) and ("⋯", "h[49]", "W, t-1") in edges(source)
    assert "h[3]" in to_dot(elman().unroll(t=50), max_steps=None).source


def test_render_guards_big_drawings_but_writes_dot(tmp_path):
    g = elman().unroll(t=50)
    with pytest.raises(ValueError, match="max_nodes"):
        render(g, tmp_path / "big.svg", max_nodes=100, max_steps=None)
    render(g, tmp_path / "big.dot", max_nodes=100, max_steps=None)
    assert "h[49]" in (tmp_path / "big.dot").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["big.dot"]


def test_bad_suffix_and_bad_object(tmp_path):
    with pytest.raises(ValueError, match=r"\.jpg"):
        render(elman(), tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="suffix"):
        render(elman(), tmp_path / "noext")
    with pytest.raises(TypeError, match="Model"):
        to_dot(42)


def test_missing_dot_says_how_to_install(tmp_path, monkeypatch):
    r = importlib.import_module("rnnc.viz.render")      # the module (rnnc.viz.render is also the function)
    monkeypatch.setattr(r.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        render(elman(), tmp_path / "e.svg")
    assert list(tmp_path.iterdir()) == []


@needs_dot
def test_repr_svg():
    svg = elman()._repr_svg_()
    assert isinstance(svg, str) and svg.lstrip().startswith(("<?xml", "<svg", "<!--")) and "</svg>" in svg


@needs_dot
def test_repr_svg_of_unrolled_and_gradient_models():
    for obj, text in ((elman().unroll(t=3), "h[2]"), (rc.grad(elman()), "δh")):
        svg = obj._repr_svg_()
        assert "</svg>" in svg and text in svg
