"""Training: optimizers' update rules, clipping, schedules, the trainer's determinism and learning,
checkpoints (atomic, verified, exact resume, SIGKILL mid-epoch), safe model files, summary counts."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from image_cases import toy_classifier, toy_data
from paths import REPO, TESTS

import rnnc as rc
import rnnc.nn as nn
from rnnc.train import (
    Adam,
    CheckpointError,
    CosineLR,
    GradientDescentMomentum,
    StepLR,
    Trainer,
    clip_global_norm,
    load_model,
    save_model,
)

RNG = np.random.default_rng(2)


def test_momentum_sgd_is_neon_rule():
    w = {"w": np.array([1.0, -2.0])}
    g = {"w": np.array([0.5, 0.25])}
    opt = GradientDescentMomentum(0.1, momentum=0.9, weight_decay=0.01)
    v = np.zeros(2)
    ref = w["w"].copy()
    for _ in range(3):
        v = 0.9 * v - 0.1 * (g["w"] + 0.01 * ref)
        ref = ref + v
        opt.step(w, g)
    np.testing.assert_allclose(w["w"], ref)


def test_adam_matches_formula_and_torch():
    w0 = RNG.standard_normal(4)
    grads = [RNG.standard_normal(4) for _ in range(3)]
    w = {"w": w0.copy()}
    opt = Adam(0.01)
    for g in grads:
        opt.step(w, {"w": g})
    m = v = np.zeros(4)
    ref = w0.copy()
    for t, g in enumerate(grads, 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref = ref - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(w["w"], ref, rtol=1e-12)
    torch = pytest.importorskip("torch", reason="PyTorch not installed")
    tw = torch.tensor(w0, requires_grad=True)
    topt = torch.optim.Adam([tw], lr=0.01)
    for g in grads:
        tw.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(w["w"], tw.detach().numpy(), rtol=1e-10)


def test_clip_and_schedules():
    g = {"a": np.array([3.0]), "b": np.array([4.0])}
    clipped, norm = clip_global_norm(g, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose([clipped["a"][0], clipped["b"][0]], [0.6, 0.8])
    assert clip_global_norm(g, 10.0)[0] is g
    assert StepLR(2, 0.5)(1.0, 3) == 0.5
    assert CosineLR(10)(1.0, 0) == 1.0 and abs(CosineLR(10)(1.0, 10)) < 1e-12
    assert abs(CosineLR(10)(1.0, 5) - 0.5) < 1e-12


def trainer(ckpt=None, seed=3):
    return Trainer(toy_classifier(), GradientDescentMomentum(0.05, 0.9, 0.0005), batch_size=16, seed=seed,
                   dtype="float64", checkpoint=ckpt, progress=False, engine="interpret", schedule=CosineLR(4))


DATA = toy_data()


def test_trainer_learns_and_is_deterministic():
    a, b = trainer(), trainer()
    ha = a.fit(DATA, epochs=3)
    b.fit(DATA, epochs=3)
    assert ha[-1]["loss"] < ha[0]["loss"]
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    c = trainer(seed=4)
    c.fit(DATA, epochs=1)
    assert any(not np.array_equal(a.params[k], c.params[k]) for k in a.params)


def test_trainer_learns_held_out():
    t = Trainer(toy_classifier(), Adam(0.02), batch_size=16, seed=3, dtype="float64", progress=False,
                engine="interpret")
    hist = t.fit(DATA, epochs=6, val=toy_data(200, seed=6))
    assert hist[-1]["val_accuracy"] > 0.7   # chance is about 0.5
    assert set(hist[-1]) >= {"epoch", "loss", "accuracy", "seconds", "val_loss", "val_accuracy"}


def test_resume_from_epoch_checkpoint_is_exact(tmp_path):
    ref = trainer()
    ref.fit(DATA, epochs=3)
    ck = str(tmp_path / "ck.npz")
    first = trainer(ck)
    first.fit(DATA, epochs=1)
    again = trainer().resume(ck)
    again.fit(DATA, epochs=3)
    for k in ref.params:
        np.testing.assert_array_equal(ref.params[k], again.params[k])
    for k in ref.buffers:
        np.testing.assert_array_equal(ref.buffers[k], again.buffers[k])
    assert [h["loss"] for h in again.history] == [h["loss"] for h in ref.history]


def test_resume_mid_epoch_is_exact(tmp_path):
    ref = trainer()
    ref.fit(DATA, epochs=2)
    t = trainer()
    t.fit(DATA, epochs=1)
    graph = t.train_net.model.graph
    perm = np.random.default_rng([t.seed, 1]).permutation(96)
    noise = np.random.default_rng([t.seed, 1, 1])
    for k in range(2):   # two batches of epoch 2 by hand, as fit would
        batch = t._take(DATA, perm[16 * k:16 * k + 16], graph)
        batch.update(t._noise(batch, noise))
        t._step(batch, 16, k / 6)
        t.batch_index += 1
    ck = str(tmp_path / "mid.npz")
    t.save_checkpoint(ck)
    again = trainer().resume(ck)
    again.fit(DATA, epochs=2)
    for k in ref.params:
        np.testing.assert_array_equal(ref.params[k], again.params[k])


SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path[:0] = [{root!r}, {tests!r}, {here!r}]
    import test_train_loop as T
    tr = T.trainer({ck!r})
    if {resume}:
        tr.resume({ck!r})
    orig = tr._step
    def slow(*a):
        orig(*a)
        if tr.epoch == 2 and tr.batch_index == 2:
            print("MID", flush=True)
            import time; time.sleep(60)
    tr._step = slow
    tr.fit(T.DATA, epochs=3)
    np.savez({out!r}, **tr.params)
""")


def test_sigkill_mid_epoch_then_resume(tmp_path):
    root, tests, here = str(REPO), str(TESTS), os.path.dirname(os.path.abspath(__file__))
    ck, out = str(tmp_path / "run.npz"), str(tmp_path / "final.npz")
    code = SCRIPT.format(root=root, tests=tests, here=here, ck=ck, out=out, resume=False)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=root)
    line = proc.stdout.readline()
    assert line.strip() == b"MID"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(out)
    # the last complete epoch survived; resuming redoes epoch 3 and lands exactly where an unbroken run does
    code = SCRIPT.format(root=root, tests=tests, here=here, ck=ck, out=out, resume=True)
    code = code.replace("tr.epoch == 2", "False")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, stdout=subprocess.DEVNULL)
    ref = trainer()
    ref.fit(DATA, epochs=3)
    with np.load(out) as z:
        for k in ref.params:
            np.testing.assert_array_equal(z[k], ref.params[k])


def test_checkpoint_refuses_truncated_tampered_and_mismatched(tmp_path):
    ck = str(tmp_path / "c.npz")
    t = trainer(ck)
    t.fit(DATA, epochs=1)
    raw = open(ck, "rb").read()
    open(tmp_path / "trunc.npz", "wb").write(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        trainer().resume(str(tmp_path / "trunc.npz"))
    params = {k: v.copy() for k, v in t.params.items()}
    params["conv1_b"][0] += 1.0
    from rnnc.train.checkpoint import atomic_savez, load_npz
    arrays, meta = load_npz(ck, "rnnc-checkpoint")
    arrays["param/conv1_b"] = params["conv1_b"]
    payload = {**arrays, "__meta__": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    np.savez(tmp_path / "tamper.npz", **payload)
    with pytest.raises(CheckpointError, match="checksum"):
        trainer().resume(str(tmp_path / "tamper.npz"))
    atomic_savez(str(tmp_path / "v2.npz"), {}, {}, "rnnc-checkpoint")
    arrays, meta = load_npz(str(tmp_path / "v2.npz"), "rnnc-checkpoint")
    meta["version"] = 99
    np.savez(tmp_path / "v99.npz", __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    with pytest.raises(CheckpointError, match="version 99"):
        trainer().resume(str(tmp_path / "v99.npz"))
    with pytest.raises(CheckpointError, match="seed"):
        trainer(seed=9).resume(ck)


def test_save_load_model(tmp_path):
    t = trainer()
    t.fit(DATA, epochs=1)
    path = str(tmp_path / "model")
    save_model(path, t.model, t.params, t.buffers)
    clf, params, buffers = load_model(path)
    assert clf.spec() == t.model.spec()
    t2 = Trainer(clf, Adam(), dtype="float64", progress=False, engine="interpret", params=params)
    t2.buffers = buffers
    np.testing.assert_array_equal(t2.predict(DATA), t.predict(DATA))
    spec = json.load(open(path + ".json"))
    spec["version"] = 2
    json.dump(spec, open(path + ".json", "w"))
    with pytest.raises(CheckpointError, match="version 2"):
        load_model(path)
    spec["version"] = 1
    spec["spec"]["layers"][0] = {"layer": "__import__", "name": "os"}
    json.dump(spec, open(path + ".json", "w"))
    with pytest.raises(CheckpointError, match="do not belong together|unknown layer"):
        load_model(path)


def test_summary_counts_by_hand():
    clf = nn.Classifier((nn.Conv2d(8, 3, padding=1, activation="relu"), nn.MaxPool2d(2),
                         nn.Conv2d(16, 3, activation="relu"), nn.Flatten(), nn.Dense(10)), (1, 8, 8))
    s = rc.summary(clf, batch=4)
    # conv1: 8*1*3*3 + 8 = 80; conv2: 16*8*3*3 + 16 = 1168; dense: 10*(16*2*2) + 10 = 650
    assert [r.params for r in s.rows] == [80, 0, 1168, 0, 650]
    assert [r.shape for r in s.rows] == [(8, 8, 8), (8, 4, 4), (16, 2, 2), (64,), (10,)]
    # lecture: input + 2 * conv maps (conv + activation) + pool map, ... ; dense without activation once
    acts = 64 + 2 * 512 + 128 + 2 * 64 + 64 + 10
    assert s.activations == acts
    assert s.memory_bytes == (4 * acts + 80 + 1168 + 650) * 4
    assert "total params: 1,898" in str(s)
