"""Your own model on your own data, end to end through the ``rnnc`` command: a GRU written from the lecture's
equations trains on variable-length sequences from an ``.npz`` (loss falls, validation evaluated), an interrupt
mid-epoch resumes bit for bit, the model is saved as a portable ``.rnnc`` and a new process predicts the same
numbers. Also: the Trainer on any ``rc.Model`` (metrics follow the loss), one-line refusals of bad data, honest
progress (compile time reported apart from the training rate)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from paths import REPO as ROOT

import rnnc as rc
from rnnc.cli import main
from rnnc.data import pad
from rnnc.train import Adam, Trainer

GRU = textwrap.dedent('''
    """A GRU from the lecture's equations: is the sum of a sequence's first feature positive?"""
    import rnnc as rc
    from rnnc import t

    D, H, C = 2, 8, 2


    def build():
        m = rc.Model("gru")
        x = m.input("x", D, lengths=True)               # (T, B, D) padded, x_lengths (B,)
        y = m.input("y", (), dtype="int", axes=())       # one class per sequence
        Uz, Wz, bz = m.param("Uz", (H, D)), m.param("Wz", (H, H)), m.param("bz", H, init="zeros")
        Ur, Wr, br = m.param("Ur", (H, D)), m.param("Wr", (H, H)), m.param("br", H, init="zeros")
        Uh, Wh, bh = m.param("Uh", (H, D)), m.param("Wh", (H, H)), m.param("bh", H, init="zeros")
        V, c = m.param("V", (C, H)), m.param("c", C, init="zeros")
        h = m.signal("h", H)
        z = rc.sigmoid(Uz @ x[t] + Wz @ h[t - 1] + bz)              # update gate
        r = rc.sigmoid(Ur @ x[t] + Wr @ h[t - 1] + br)              # reset gate
        h_new = rc.tanh(Uh @ x[t] + Wh @ (r * h[t - 1]) + bh)       # candidate state
        h[t] = (1 - z) * h[t - 1] + z * h_new
        o = V @ rc.last(h, t) + c                                   # h at each sample's own last step
        m.output("probs", rc.softmax(o))
        m.loss(rc.softmax_cross_entropy(o, y))
        return m
''')


def sequences(n: int, seed: int) -> dict:
    """``n`` sequences of 2..8 steps, padded time-first with their lengths, and their classes."""
    rng = np.random.default_rng(seed)
    seqs = [rng.normal(size=(rng.integers(2, 9), 2)) for _ in range(n)]
    x, lengths = pad(seqs, dtype=np.float32)
    y = np.array([int(s[:, 0].sum() > 0) for s in seqs])
    return {"x": x, "x_lengths": lengths, "y": y}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "gru.py").write_text(GRU)
    np.savez(tmp_path / "train.npz", **sequences(96, 0))
    np.savez(tmp_path / "val.npz", **sequences(32, 1))
    test = sequences(8, 2)
    np.savez(tmp_path / "x.npz", x=test["x"], x_lengths=test["x_lengths"])     # no targets: outputs only
    return tmp_path


def train_argv(folder: Path, *extra: str) -> list[str]:
    return ["train", str(folder / "gru.py"), "--data", str(folder / "train.npz"), "--val", str(folder / "val.npz"),
            "--batch", "16", "--lr", "0.05", "--engine", "interpret", *extra]


def epoch_rows(out: str) -> list[dict]:
    rows = []
    for line in out.splitlines():
        if line.startswith("epoch "):
            rows.append({k: float(v) for k, v in re.findall(r"(\w+) (-?\d+\.\d+)", line)})
    return rows


def test_gru_file_trains_resumes_saves_and_predicts(files, capsys, monkeypatch):
    folder = files
    # straight: 3 epochs; loss falls, the validation set is evaluated every epoch
    assert main(train_argv(folder, "--epochs", "3", "--save", str(folder / "straight.rnnc"))) == 0
    out = capsys.readouterr().out
    rows = epoch_rows(out)
    assert len(rows) == 3 and rows[-1]["loss"] < rows[0]["loss"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[-1])
    assert f"wrote {folder / 'straight.rnnc'}" in out

    # interrupted by SIGINT in the middle of epoch 2, then resumed: bit-identical params
    steps = {"n": 0}
    step = Trainer._step

    def step_then_interrupt(self, *args):
        step(self, *args)
        steps["n"] += 1
        if steps["n"] == 8:                      # 6 batches per epoch: batch 2 of epoch 2
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_step", step_then_interrupt)
    ck = str(folder / "run")
    assert main(train_argv(folder, "--epochs", "3", "--checkpoint", ck)) == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(Trainer, "_step", step)
    assert main(train_argv(folder, "--epochs", "3", "--checkpoint", ck, "--resume",
                           "--save", str(folder / "resumed.rnnc"))) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "1 epochs and 2 batches done" in out
    _, straight = rc.load(folder / "straight.rnnc")
    model, resumed = rc.load(folder / "resumed.rnnc")
    assert straight.keys() == resumed.keys()
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name])

    # a new process loads the file (no source) and predicts; the same numbers as here
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "rnnc", "predict", str(folder / "resumed.rnnc"), "--input",
                           str(folder / "x.npz"), "-o", str(folder / "out.npz")], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "probs (8, 2)" in done.stdout
    inputs = dict(np.load(folder / "x.npz"))
    here = rc.compile(model, verbose=True).forward(inputs, resumed).outputs["probs"]
    assert "rc.compile: 'gru' outputs kernel" in capsys.readouterr().err
    with np.load(folder / "out.npz") as got:
        np.testing.assert_array_equal(got["probs"], here)
    ns: dict = {}
    exec(compile(GRU, "gru.py", "exec"), ns)                 # the source model, interpreted: the same maths
    np.testing.assert_allclose(rc.interpret(ns["build"](), inputs, resumed).outputs["probs"], here, rtol=1e-5,
                               atol=1e-6)


def test_compiled_training_reports_compile_time_apart(files, capsys):
    code = main(train_argv(files, "--epochs", "1", "--engine", "compiled", "--truncate", "4,4"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert re.search(r"compiling \d+ stages of 'gru' \(forward and gradient\)\.\.\. \d+\.\d s", captured.err)
    assert captured.err.index("compiling") < captured.err.index("epoch 1/1")     # before the first batch
    row = epoch_rows(captured.out)[0]
    assert row["loss"] > 0


def test_truncated_bptt_from_the_command_line(files, capsys):
    for name, extra in (("full", ()), ("cut", ("--truncate", "2,2"))):
        assert main(train_argv(files, "--epochs", "1", "--save", str(files / f"{name}.rnnc"), *extra)) == 0
    full, cut = rc.load(files / "full.rnnc")[1], rc.load(files / "cut.rnnc")[1]
    assert not np.array_equal(full["Wz"], cut["Wz"])           # gradients stop after 2 steps
    model = rc.load(files / "full.rnnc")[0]
    ref = Trainer(model, Adam(0.05), batch_size=16, engine="interpret", progress=False, truncate=(2, 2))
    ref.fit(dict(np.load(files / "train.npz")), epochs=1)
    for k in ref.params:                                     # the option is the Trainer's truncate=
        np.testing.assert_array_equal(ref.params[k], cut[k])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("arrays, message", [
    (lambda d: {"x": d["x"], "x_lengths": d["x_lengths"]}, "missing array 'y': model 'gru' reads input 'y' laid "
                                                           "out (B,); the file holds x, x_lengths"),
    (lambda d: {**d, "x": d["x"].swapaxes(0, 1)}, "looks batch-first (B, T, ...), use rnnc.data.to_time_first"),
    (lambda d: {**d, "x": d["x"][..., :1]}, "array x: expected layout (T, B, 2), got shape (8, 96, 1)"),
    (lambda d: {**d, "y": d["y"].astype(float)}, "array y: input 'y' holds integers"),
    (lambda d: {**d, "y": d["y"][:50]}, "array 'y': axis B has size 50, but array 'x' has 96"),
    (lambda d: {**d, "y": d["y"] + 5}, "InputError: input 'y'"),
])
def test_bad_data_is_one_line_naming_file_and_array(files, capsys, arrays, message):
    data = dict(np.load(files / "train.npz"))
    np.savez(files / "bad.npz", **arrays(data))
    code = main(["train", str(files / "gru.py"), "--data", str(files / "bad.npz"), "--engine", "interpret"])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"{files / 'bad.npz'}: error: ") and message in line, line


def test_bad_options_and_files(files, capsys):
    gru = str(files / "gru.py")
    assert main(["train", gru, "--data", str(files / "train.npz"), "--resume"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("--resume: error: ")
    assert main(["train", gru, "--data", str(files / "train.npz"), "--truncate", "4"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("--truncate: error: ")
    assert main(["train", gru]) == 2
    assert "give --data TRAIN.npz" in one_error_line(capsys.readouterr().err)
    (files / "broken.rnnc").write_bytes(b"not a model")
    for argv in (["predict", str(files / "broken.rnnc"), "--input", str(files / "x.npz"), "-o",
                  str(files / "o.npz")], ["render", str(files / "broken.rnnc"), "-o", str(files / "g.dot")]):
        assert main(argv) == 2
        assert one_error_line(capsys.readouterr().err).startswith(f"{files / 'broken.rnnc'}: error: ")


# ---------------------------------------------------------------------------------------------- the Trainer
def regression_model() -> rc.Model:
    from rnnc import t

    m = rc.Model("regress")
    x, y = m.input("x", 2, lengths=True), m.input("y", 1)
    W, U, V = m.param("W", (4, 2)), m.param("U", (4, 4)), m.param("V", (1, 4))
    h = m.signal("h", 4)
    h[t] = rc.tanh(W @ x[t] + U @ h[t - 1])
    m.output("pred", V @ h[t])
    m.loss(rc.mse(V @ h[t], y[t]))
    return m


def test_regression_model_reports_loss_and_mse_not_accuracy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 40, 2))
    data = {"x": x, "x_lengths": rng.integers(1, 7, size=40), "y": 0.5 * x[..., :1]}
    tr = Trainer(regression_model(), Adam(0.05), batch_size=8, dtype="float64", engine="interpret", progress=False)
    hist = tr.fit(data, epochs=3, val=data)
    assert "accuracy" not in hist[-1] and "val_accuracy" not in hist[-1]
    assert {"loss", "mse", "val_loss", "val_mse", "samples_s"} <= set(hist[-1])
    assert hist[-1]["loss"] < hist[0]["loss"]
    # MSE over the valid steps only, by hand
    got = tr.evaluate(data)
    pred = tr.forward({"x": data["x"], "x_lengths": data["x_lengths"]})["pred"]
    valid = np.arange(6)[:, None] < data["x_lengths"][None, :]
    err = (pred - data["y"])[valid]
    assert got["mse"] == pytest.approx(float((err ** 2).mean()), rel=1e-12)
    assert got["loss"] == pytest.approx(float((err ** 2).sum() / 40), rel=1e-12)
    with pytest.raises(ValueError, match="no output 'probs' \\(its outputs: pred\\)"):
        tr.predict(data)


def test_model_without_a_loss_is_refused():
    m = rc.Model("noloss")
    x = m.input("x", 1)
    m.output("y", x[rc.t] * 2.0)
    with pytest.raises(ValueError, match="has no loss to train"):
        Trainer(m, Adam(), progress=False)
