"""examples/captioning.py: the data, the attention block's gradients (finite differences, compiled vs the
interpreter), decoding (greedy == beam of width 1, f.generate == the interpreter reference) and the quick run."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from compiled_check import assert_grads_match
from gradcheck import check_param_grads
from paths import EXAMPLES

import rnnc as rc
from rnnc import t
from rnnc.ops.linalg import transpose


def example(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


cap = example("captioning")
fm = example("fashion_mnist")
needs_data = pytest.mark.skipif(not fm.available(), reason="Fashion-MNIST is not installed")


def attention_block(P: int = 5, C: int = 3, A: int = 4, H: int = 3) -> rc.Model:
    """The attention recurrence alone, on an axis-free input F (P x C): every op the captioning model adds."""
    m = rc.Model("attend")
    F = m.input("F", (P, C), axes=())
    x = m.input("x", 2)
    Wf, Wh, v = m.param("Wf", (C, A)), m.param("Wh", (A, H)), m.param("v", A)
    U, W = m.param("U", (H, C + 2)), m.param("W", (H, H))
    h = m.signal("h", H)
    alpha = rc.softmax(rc.tanh(F @ Wf + Wh @ h[t - 1]) @ v)
    z = rc.fsum(transpose(F) * alpha, axis=-1)
    h[t] = rc.tanh(U @ rc.concat([x[t], z]) + W @ h[t - 1])
    m.output("alpha", alpha)
    m.loss(rc.mse(h[t], 0.5 + 0 * h[t]))
    return m


def _attention_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    m = attention_block()
    params = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in m.init_params(seed=1, dtype="float64").items()}
    return m, {"F": rng.normal(size=(2, 5, 3)), "x": rng.normal(size=(3, 2, 2))}, params


def test_attention_gradients_match_finite_differences():
    m, inputs, params = _attention_data()
    errors = check_param_grads(m, inputs, params)
    assert max(errors.values()) < 1e-6, errors


def test_attention_compiled_equals_interpreter():
    """The loss and every gradient, compiled against the interpreter (float64); ``alpha`` itself is checked
    through the captioning model's steps below (one kernel less to compile)."""
    m, inputs, params = _attention_data()
    ref = rc.interpret(rc.grad(m), inputs, params)
    np.testing.assert_allclose(ref.outputs["alpha"].sum(-1), 1.0, rtol=1e-12)
    assert set(ref.grads) == set(params)
    assert_grads_match(rc.compile(m, dtype="float64"), m, inputs, params, 1e-8, atol=1e-12, loss_tol=1e-10)


def _slot(img: np.ndarray, s: int) -> np.ndarray:
    """Slot ``s`` (0-3, reading order) of one 56 x 56 canvas."""
    r, c = divmod(s, 2)
    return img[28 * r:28 * r + 28, 28 * c:28 * c + 28]


def test_canvases_are_seeded_and_captions_name_items_in_reading_order():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 255, size=(20, 1, 28, 28)).astype(np.uint8)
    labels = np.arange(20) % 10
    a, b = cap.canvases(images, labels, 30, seed=3), cap.canvases(images, labels, 30, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["img"], cap.canvases(images, labels, 30, seed=4)["img"])
    assert a["img"].shape == (30, 1, 56, 56) and a["w"].shape == (5, 30) and a["y"].shape == (5, 30)
    assert (a["w"][0] == cap.START).all() and (a["y"][-1] == cap.END).all()
    assert np.array_equal(a["w"][1:], a["y"][:-1])                     # teacher forcing: shifted by one
    counts = (a["slots"] >= 0).sum(axis=1)
    assert set(counts) == {2, 3, 4}
    for n in range(30):
        filled = [s for s in range(4) if _slot(a["img"][n, 0], s).any()]
        assert filled == list(a["slots"][n, :counts[n]])              # reading order: top row, left to right
        for k, s in enumerate(filled):                                  # the k-th word names the k-th item
            match = [i for i in range(20) if np.array_equal(images[i, 0], _slot(a["img"][n, 0], s))]
            assert cap.VOCAB.tokens[a["y"][k, n]] == cap.WORDS[labels[match[0]]]
        assert (a["y"][counts[n]:, n] == cap.END).all()                # <end>, then padded with <end>


@needs_data
def test_test_canvases_use_only_test_images():
    d = cap.datasets(40, 10, 40, seed=0)
    xt, _ = fm.load("test")
    x, _ = fm.load("train")
    test_items = {xt[i, 0].tobytes() for i in range(len(xt))}
    for n in range(40):
        for s in d["test"]["slots"][n]:
            if s >= 0:
                assert _slot(d["test"]["img"][n, 0], s).astype(np.uint8).tobytes() in test_items
    assert d["train"]["img"].max() > 0 and not np.array_equal(d["train"]["img"], d["test"]["img"])
    assert x.shape[0] == 60000


def test_attention_on_item_counts_the_named_slot_and_scores_stop_at_end():
    alpha = np.zeros((5, 1) + cap.GRID)
    alpha[0, 0, 0:2, 0:2] = 1.0 / 4                                # the 2 x 2 cells of slot 0
    alpha[1, 0, 2:4, 2] = 1.0 / 4                                  # half on slot 3, half on slot 2
    alpha[1, 0, 2:4, 1] = 1.0 / 4
    alpha[2, 0] = 1.0 / 16                                         # <end>: not counted
    got = cap.attention_on_item(alpha, np.array([[0, 3, -1, -1]]))
    assert np.isclose(got, (1.0 + 0.5) / 2)
    a, b, c = (cap.VOCAB.ids[w] for w in cap.WORDS[:3])
    y = np.array([[a, b], [b, cap.END], [c, cap.END], [cap.END, cap.END], [cap.END, cap.END]])
    pred = y.copy()
    pred[4, 0] = a                                                 # after the true <end>: ignored
    pred[1, 1] = c                                                 # the second caption's <end> missed
    assert cap.scores(pred, y) == {"caption": 0.5, "word": 5 / 6}


@pytest.fixture(scope="module")
def quick_models():
    """The quick mode's compiled pair (``cap.compiled`` keeps it for the process, so the quick run reuses it)."""
    out = {}
    for kind in cap.KINDS:
        model, f = cap.compiled(kind, **cap.QUICK_SIZES)
        out[kind] = (model, f, model.init_params(seed=2))
    return out


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(n,) + cap.CANVAS).astype(np.float32)


def test_greedy_is_beam_of_width_one_and_beam_scores_no_worse(quick_models):
    img = _images(3, 1)
    for kind, (_model, f, params) in quick_models.items():
        g = cap.greedy(f, params, img)
        assert g.shape == (cap.STEPS, 3)
        np.testing.assert_array_equal(cap.beam_search(f, params, img, 1), g, err_msg=kind)
        assert cap.beam_search(f, params, img, 3).shape == (cap.STEPS, 3)


def test_generate_equals_interpreter_reference(quick_models):
    from rnnc.runtime.generate import generate

    img = _images(2, 2)
    prime = np.full((1, 2), cap.START)
    for kind, (model, f, params) in quick_models.items():
        want = generate(model, params, prime, cap.STEPS, {"w": "logits"}, temperature=0, dtype="float32",
                        inputs={"img": img})
        np.testing.assert_array_equal(f.generate(params, prime, cap.STEPS, temperature=0, inputs={"img": img}), want,
                                      err_msg=kind)


def test_attention_maps_by_steps_equal_the_interpreter(quick_models):
    model, f, params = quick_models["attention"]
    a, b, c = (cap.VOCAB.ids[w] for w in cap.WORDS[3:6])
    img, caption = _images(2, 3), np.array([[a, b], [c, a], [b, cap.END], [cap.END, cap.END], [cap.END, cap.END]])
    w = np.concatenate([np.full((1, 2), cap.START), caption[:-1]])
    ref = rc.interpret(model, {"img": img, "w": w, "y": caption}, params).outputs["alpha"]
    got = cap.attention_maps(f, params, img, caption)
    np.testing.assert_allclose(got, ref.reshape(got.shape), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=(2, 3)), 1.0, rtol=1e-5)


@needs_data
def test_quick_run_writes_results_and_pictures(tmp_path, quick_models):
    res = cap.train(quick=True, out=tmp_path, log=lambda *_: None)
    for kind in cap.KINDS:
        assert np.mean(res[kind]["losses"][-5:]) < np.mean(res[kind]["losses"][:5])
        assert set(res[kind]["test"]) == {"greedy", "beam3"}
    assert 0.0 <= res["attention"]["attention_on_item"] <= 1.0
    for name in ("results.json", "attention.npz", "baseline.npz", "captioning_curves.png",
                 "captioning_attention.png"):
        assert (tmp_path / name).is_file()
    text = cap.caption_file(str(_write_sample(tmp_path)), str(tmp_path), beam=2)
    assert set(text) == {"greedy", "beam2"}


def _write_sample(folder: Path) -> Path:
    path = folder / "canvas.npy"
    assert cap.main(["sample", str(path)]) == 0
    return path
