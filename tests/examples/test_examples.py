"""The examples learn (short runs) and work: each test fails if its example stops learning or breaks.

Examples are imported from ``examples/`` as modules; training runs are shortened but keep the examples'
own code paths. Thresholds are far from chance, and far from what an untrained model gives.
"""
from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from paths import EXAMPLES
from paths import REPO as ROOT

import rnnc as rc

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


def example(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def test_hello_spells_hello_and_untrained_does_not():
    hello = example("hello")
    untrained = hello.build().init_params(seed=0, dtype="float64")
    assert hello.sample(hello.build(), untrained) != "hello"
    out = hello.train(steps=300, seed=0, log=lambda *_: None)
    assert out["sample"] == "hello"
    assert out["loss"] < 0.1
    assert hello.predict(out["params"], "hel") == "hello"
    with pytest.raises(ValueError, match="prompt"):
        hello.predict(out["params"], "hex")


def test_char_lstm_learns_from_stdlib_source_with_truncated_bptt():
    lm = example("char_lstm")
    out = lm.train(quick=True, samples=1, log=lambda *_: None, steps=30)
    losses = out["losses"]
    assert np.log(len(lm.CHARS)) - 0.3 < np.mean(losses[:3])         # starts near a uniform guess (4.56)
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.7           # and learns the character statistics
    text = out["samples"][0]
    assert text.startswith("def ") and len(text) == 4 + 120 and set(text) <= set(lm.CHARS)


def test_char_lstm_state_carries_across_windows():
    """Feeding a text in two windows, passing hK_T -> hK_0, equals feeding it in one."""
    lm = example("char_lstm")
    m = lm.build(layers=2, hidden=8)
    p = m.init_params(seed=1, dtype="float64")
    codes = lm.corpus(max_chars=40)[:12, None]
    whole = rc.interpret(m, {"x": codes, **lm.zero_state(m, 1)}, p).outputs
    first = rc.interpret(m, {"x": codes[:5], **lm.zero_state(m, 1)}, p).outputs
    second = rc.interpret(m, {"x": codes[5:], **lm.next_state(m, first)}, p).outputs
    np.testing.assert_allclose(second["logits"], whole["logits"][5:], rtol=1e-10, atol=1e-12)


def test_seq2seq_reverses_digit_strings():
    s2s = example("seq2seq")
    out = s2s.train(steps=120, length=3, hidden=32, batch=32, seed=0, log=None)
    assert out["accuracy"] > 0.8                                      # chance: 0.001
    assert s2s.predict(out["params"], "123") == "321"


def test_many_to_one_learns_and_ignores_padding():
    m2o = example("many_to_one")
    out = m2o.train(epochs=1, n_train=1500, seed=0, log=None)
    assert len(out["history"]) == 1 and out["history"][0]["val_accuracy"] > 0.85
    assert out["accuracy"] > 0.85
    model, rng = m2o.build(), np.random.default_rng(5)
    data = m2o.task(20, rng)
    other = dict(data, x=np.where(np.arange(m2o.MAX_LEN)[:, None, None] < data["x_lengths"][None, :, None],
                                  data["x"], 123.0))
    a = rc.interpret(model, data, out["params"]).outputs["probs"]
    b = rc.interpret(model, other, out["params"]).outputs["probs"]
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_jordan_learns_running_parity_and_autonomous_system_oscillates():
    ja = example("jordan_autonomous")
    j = ja.train_jordan(steps=250, seed=0)
    assert j["accuracy"] > 0.95                                       # on streams twice as long as trained
    a = ja.train_autonomous(steps=300, seed=0)
    err = np.abs(a["rollout"] - a["target"])
    assert a["losses"][-1] < 0.05 * a["losses"][0]
    assert err[: 2 * ja.PERIOD].max() < 0.2 and err[2 * ja.PERIOD:].max() < 0.4   # keeps going past the fit


@needs_dot
def test_jordan_and_pattern_drawings(tmp_path):
    ja, rp = example("jordan_autonomous"), example("recurrence_patterns")
    paths = ja.draw(str(tmp_path)) + rp.draw(str(tmp_path), steps=3)
    assert len(paths) == 7
    for p in paths:
        assert Path(p).read_text().lstrip().startswith(("<?xml", "<svg"))
    assert "o[2]" in (tmp_path / "examples_pattern2_unrolled.svg").read_text()
    for name in ("jordan_folded", "jordan_unrolled", "autonomous_folded", "autonomous_unrolled",
                 "pattern1_unrolled", "pattern2_unrolled", "pattern3_unrolled"):
        assert (ROOT / "docs" / "img" / f"examples_{name}.svg").exists(), f"docs/img lacks examples_{name}.svg"


@pytest.mark.parametrize("name", ["hidden_to_hidden", "output_to_hidden", "sequence_to_one"])
def test_recurrence_patterns_rolled_equals_unrolled(name):
    m = getattr(example("recurrence_patterns"), name)()
    rng = np.random.default_rng(0)
    per_step = name != "sequence_to_one"
    data = {"x": rng.normal(size=(4, 2, 4)), "y": rng.integers(0, 3, size=(4, 2) if per_step else (2,))}
    p = m.init_params(seed=0, dtype="float64")
    rolled = rc.interpret(m, data, p)
    unrolled = rc.interpret_unrolled(m.unroll(t=4), data, p)
    np.testing.assert_allclose(rolled.loss, unrolled.loss, rtol=1e-10)


def test_vanishing_gradients_elman_vanishes_lstm_with_forget_bias_does_not(tmp_path):
    vg = example("vanishing_gradients")
    elman = vg.adjoint_norms("Elman", steps=30)
    lstm = vg.adjoint_norms("LSTM", steps=30, gate_bias=2.0)
    assert elman.shape == (30,) and np.all(elman > 0)
    assert elman[29] / elman[0] < 1e-3                 # geometric decay
    assert lstm[29] / lstm[0] > 100 * elman[29] / elman[0]
    panels = {"test": {"Elman": elman, "LSTM": lstm}}
    out = vg.plot(panels, str(tmp_path / "vg.png"))
    assert Path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ROOT / "docs" / "img" / "examples_vanishing_gradients.png").exists()


def test_adjoint_of_h_matches_finite_differences():
    """The quantity plotted, dL/dh[t], against the chain rule written out by hand."""
    vg = example("vanishing_gradients")
    m = vg.build("Elman", hidden=5)
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(6, 1, 8)), "z": rng.normal(size=(1, 4))}
    p = m.init_params(seed=0, dtype="float64")
    adjoint = rc.interpret(rc.grad(m, wrt=["h"]), data, p).grads["h"]              # (T, B, H)
    h = rc.interpret(m, data, p).values["h"]
    # at the loss step: dL/dh[T-1] = 2 V^T (V h[T-1] - z) / 4 (mse is the mean over the 4 features)
    np.testing.assert_allclose(adjoint[-1, 0], 2 * p["V"].T @ (p["V"] @ h[-1, 0] - data["z"][0]) / 4, rtol=1e-8)
    # one step back: dL/dh[T-2] = W^T (diag(1 - h[T-1]^2) dL/dh[T-1])
    W = p["elman_W"]                                                # the recurrent weights (hidden -> hidden)
    np.testing.assert_allclose(adjoint[-2, 0], W.T @ ((1 - h[-1, 0] ** 2) * adjoint[-1, 0]), rtol=1e-8)


def test_readme_lists_every_example_with_a_command():
    rows = [line for line in (EXAMPLES / "README.md").read_text().splitlines() if line.startswith("| [")]
    listed = {line.split("](")[0][3:] for line in rows}
    assert listed == {p.name for p in EXAMPLES.glob("*.py")}, "examples/README.md must list every example"
    assert all(line.rstrip(" |").endswith("`") for line in rows), "each row ends with its command"


def test_examples_write_under_out_unless_told(tmp_path, monkeypatch):
    """Nothing lands in the repository's docs/img by default: folders default to out/<example>; --out docs/img
    is how the docs' figures are regenerated."""
    for path in EXAMPLES.glob("*.py"):
        text = path.read_text()
        assert '"docs", "img"' not in text and 'default="docs/img"' not in text, path.name
    for name in ("jordan_autonomous", "recurrence_patterns", "vanishing_gradients"):
        assert Path(example(name).OUT).parts[0] == "out", name
    monkeypatch.chdir(tmp_path)
    vg = example("vanishing_gradients")
    monkeypatch.setattr(vg, "adjoint_norms", lambda kind, steps, gate_bias=0.0: np.linspace(1.0, 0.5, steps))
    assert vg.main(["--steps", "3"]) == 0
    assert (tmp_path / "out" / "vanishing_gradients" / vg.FIGURE).exists()
    assert vg.main(["--steps", "3", "--out", "figs"]) == 0 and (tmp_path / "figs" / vg.FIGURE).exists()


# ---------------------------------------------------------------------------------------------- command line
def test_cli_train_then_predict_hello(tmp_path, capsys):
    from rnnc.cli import main

    params = tmp_path / "hello.npz"
    assert main(["train", str(EXAMPLES / "hello.py"), "--steps", "300", "--save", str(params)]) == 0
    assert "sample 'hello'" in capsys.readouterr().out
    assert main(["predict", str(EXAMPLES / "hello.py"), "--params", str(params), "--prompt", "h"]) == 0
    assert capsys.readouterr().out.strip() == "hello"


def test_cli_train_and_predict_refuse_files_without_them(tmp_path, capsys):
    from rnnc.cli import main

    assert main(["train", str(EXAMPLES / "elman.py")]) == 2
    assert "defines no train()" in capsys.readouterr().err
    assert main(["predict", str(EXAMPLES / "hello.py"), "--params", str(tmp_path / "none.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_summary_of_a_model_and_of_a_classifier(tmp_path, capsys):
    from rnnc.cli import main

    assert main(["summary", str(EXAMPLES / "hello.py"), "--size", "t=5", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "param    W                (3, 3)" in out and "signal   h                (3,)           t" in out
    assert "30" in out.split("signal   h")[1].splitlines()[0]              # 5 steps x 2 samples x 3 units
    # per step and sample U onehot(x) 2*3*4, W h 2*3*3, V h 2*4*3 = 66 FLOPs forward; backward the outer sums
    # for U, W, V (24 + 18 + 24) and V^T g, W^T g (24 + 18): 108 more
    assert "forward 660 FLOPs, training step 1,740 FLOPs" in out
    clf = tmp_path / "clf.py"
    clf.write_text("import rnnc.nn as nn\nclassifier = nn.Classifier((nn.Dense(5), nn.Dense(2)), (3,))\n")
    assert main(["summary", str(clf)]) == 0
    out = capsys.readouterr().out
    assert "Dense" in out and "20" in out                                   # 3*5+5 params in the first layer
    # forward 2 (5*3 + 2*5); backward the two weights' outer sums (30 + 20) and W2^T g (20), not W1^T g
    assert "forward 50 FLOPs, training step 120 FLOPs" in out


def test_cli_compile_emits_source(capsys):
    from rnnc.cli import main

    assert main(["compile", str(EXAMPLES / "hello.py"), "--emit-source"]) == 0
    captured = capsys.readouterr()
    assert "@numba.njit" in captured.out and "  # v" in captured.out      # lines name their IR node
    assert "compiled 'hello'" in captured.err


def test_cli_bench_interpreter_rows(capsys):
    from rnnc.cli import main

    assert main(["bench", str(EXAMPLES / "hello.py"), "--no-compiled", "--size", "t=5", "--batch", "2",
                 "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "interpret forward" in out and "interpret loss+grad" in out and "compiled" not in out


def test_char_lstm_peers_compute_the_same_loss():
    """bench_peers' PyTorch / JAX versions are the same model as rnnc's (needs at least one installed)."""
    lm = example("char_lstm")
    m = lm.build(2, 8)
    p = m.init_params(seed=0, dtype="float64")
    rng = np.random.default_rng(0)
    codes = lm.corpus(max_chars=200)
    batch = {"x": codes[:24].reshape(3, 8).T, "y": codes[1:25].reshape(3, 8).T,
             **{k: rng.normal(size=v.shape) for k, v in lm.zero_state(m, 3).items()}}
    peers = lm.bench_peers(batch, p)
    if not peers:
        pytest.skip("neither PyTorch nor JAX is installed")
    want = rc.interpret(m, batch, p).loss
    for name, fn in peers.items():
        assert np.isclose(fn(), want, rtol=1e-5), name
