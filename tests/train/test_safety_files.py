"""Issue 18, part 5: checkpoints and model files are safe at the boundary.

Interrupts wait for a safe point between steps (and resume bit for bit), kills leave no orphan temporary files
after the next save, re-signed checkpoints with malformed metadata and malformed model specs are refused with
one ``CheckpointError`` line naming the file and the field, and nothing rnnc loads can run code.
"""
import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paths import REPO as ROOT

import rnnc.nn as nn
from rnnc.train import CheckpointError, GradientDescentMomentum, Trainer, load_model, save_model
from rnnc.train.checkpoint import CHECKPOINT_SCHEMA, atomic_savez, digest, load_npz
from rnnc.train.files import remove_stale_temps

sys.path.insert(0, str(ROOT))


def tiny_classifier():
    return nn.Classifier((nn.Dense(6, activation="tanh"), nn.BatchNorm(), nn.Dropout(0.2), nn.Dense(2),
                          nn.Softmax()), (5,))


def trainer(ck=None, seed=3):
    return Trainer(tiny_classifier(), GradientDescentMomentum(0.05, 0.9, 0.001), batch_size=8, seed=seed,
                   dtype="float64", checkpoint=ck, progress=False, engine="interpret")


X = np.random.default_rng(0).standard_normal((48, 5))
DATA = {"x": X, "y": (X[:, 0] > X[:, 1]).astype(int)}   # 6 batches of 8 per epoch
EPOCHS = 3


def reference():
    t = trainer()
    t.fit(DATA, epochs=EPOCHS)
    return t


def assert_same(a, b):
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    for k in a.buffers:
        np.testing.assert_array_equal(a.buffers[k], b.buffers[k], err_msg=k)


def one_line_naming(err, *words):
    msg = str(err.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


# ------------------------------------------------------------------------------------------ interrupts
def signal_at_step(t, k, signals):
    """Make trainer ``t`` send itself ``signals`` in the middle of its ``k``-th step (after the optimizer update,
    before the counters: where an interrupt used to tear the state)."""
    steps, step = [0], t._step

    def patched(*args):
        step(*args)
        steps[0] += 1
        if steps[0] == k:
            for s in signals:
                os.kill(os.getpid(), s)
    t._step = patched


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_waits_for_the_safe_point_then_saves(tmp_path, sig):
    ck = str(tmp_path / "run.npz")
    t = trainer(ck)
    signal_at_step(t, 8, [sig])   # the 2nd step of epoch 2
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match=f"{sig.name}: stopped between two steps.*checkpoint saved"):
        t.fit(DATA, epochs=EPOCHS)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert (t.epoch, t.batch_index) == (1, 2)
    again = trainer().resume(ck)
    assert (again.epoch, again.batch_index) == (1, 2)
    again.fit(DATA, epochs=EPOCHS)
    assert_same(again, reference())


def test_second_interrupt_mid_step_stops_at_once_without_saving(tmp_path):
    ck = str(tmp_path / "run.npz")
    t = trainer(ck)
    signal_at_step(t, 8, [signal.SIGINT, signal.SIGINT])
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        t.fit(DATA, epochs=EPOCHS)
    with pytest.raises(RuntimeError, match="not consistent"):
        t.fit(DATA, epochs=EPOCHS)
    with pytest.raises(RuntimeError, match="not consistent"):
        t.save_checkpoint(ck)
    again = trainer().resume(ck)   # the checkpoint of the last epoch end, untouched
    assert (again.epoch, again.batch_index) == (1, 0)
    again.fit(DATA, epochs=EPOCHS)
    assert_same(again, reference())
    t.resume(ck)   # a torn trainer becomes usable again by resuming
    del t._step
    t.fit(DATA, epochs=EPOCHS)
    assert_same(t, again)


def test_interrupts_during_a_save_wait_for_it(tmp_path, monkeypatch):
    import rnnc.train.trainer as trainer_module

    def interrupted_save(*args):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        atomic_savez(*args)

    monkeypatch.setattr(trainer_module, "atomic_savez", interrupted_save)
    ck = str(tmp_path / "run.npz")
    t = trainer(ck)
    signal_at_step(t, 3, [signal.SIGINT])
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        t.fit(DATA, epochs=EPOCHS)
    assert not t._interrupts.forced
    again = trainer().resume(ck)
    assert (again.epoch, again.batch_index) == (0, 3)
    again.fit(DATA, epochs=EPOCHS)
    assert_same(again, reference())


def test_fit_in_a_thread_installs_no_handler(tmp_path):
    out = {}
    th = threading.Thread(target=lambda: out.update(t=reference()))
    th.start()
    th.join()
    assert_same(out["t"], reference())


def test_sigint_at_random_moments_resumes_bit_identically():
    """A few random moments here; ``python benchmarks/sigint_resume.py -n 100`` runs the full experiment."""
    from benchmarks.sigint_resume import run_tries

    seed = int.from_bytes(os.urandom(4), "little")
    n = 5
    same, differ = run_tries(n, seed=seed)
    assert same == n, f"seed {seed}: resumed differently after SIGINT at {differ} s"


# ------------------------------------------------------------------------------------------ kills and temp files
KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import numpy as np
    from rnnc.train.checkpoint import atomic_savez
    def stuck(f, **arrays):
        f.write(b"PK half an archive")
        f.flush()
        print("SAVING", flush=True)
        time.sleep(60)
    np.savez = stuck
    atomic_savez({path!r}, {{"a": np.zeros(3)}}, {{}}, "rnnc-checkpoint")
""")


def temps(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".rnnc-tmp-"))


def kill_during_save(path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER.format(root=str(ROOT), path=path)],
                            stdout=subprocess.PIPE, cwd=str(ROOT))
    assert proc.stdout.readline().strip() == b"SAVING"
    proc.kill()
    proc.wait()
    return proc.pid


def test_sigkill_during_save_leaves_no_orphan_after_the_next_save(tmp_path):
    ck = str(tmp_path / "run.npz")
    t = trainer(ck)
    t.fit(DATA, epochs=1)
    pid = kill_during_save(ck)
    assert len(temps(tmp_path)) == 1 and f"-{pid}-" in temps(tmp_path)[0]
    t.save_checkpoint(ck)
    assert temps(tmp_path) == []
    kill_during_save(ck)
    assert len(temps(tmp_path)) == 1
    again = trainer().resume(ck)   # the kill left the last checkpoint whole; a load removes the orphan too
    assert temps(tmp_path) == []
    again.fit(DATA, epochs=EPOCHS)
    assert_same(again, reference())


def test_temp_files_of_live_writers_and_other_programs_are_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from rnnc.train.files import _host

        live = tmp_path / f".rnnc-tmp-{_host()}-{sleeper.pid}-abc123.npz"
        mine = tmp_path / f".rnnc-tmp-{_host()}-{os.getpid()}-abc123.npz"   # no write of ours in flight
        foreign = tmp_path / ".rnnc-tmp-otherhost-1-abc123.npz"
        other = tmp_path / ".tmp-abc123.npz"
        for p in (live, mine, foreign, other):
            p.write_bytes(b"x")
        removed = remove_stale_temps(str(tmp_path))
        assert [Path(p).name for p in removed] == [mine.name]
        assert live.exists() and foreign.exists() and other.exists()
        os.utime(foreign, (1, 1))   # a day old: its writer is long gone
        remove_stale_temps(str(tmp_path))
        assert not foreign.exists() and live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    atomic_savez(str(tmp_path / "c.npz"), {}, {}, "rnnc-checkpoint")
    assert not live.exists() and other.exists()


# ------------------------------------------------------------------------------------------ checkpoint metadata
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    ck = str(tmp_path_factory.mktemp("ck") / "run.npz")
    t = trainer(ck)
    signal_at_step(t, 9, [signal.SIGINT])   # mid-epoch: batch_index 3, partial sums, optimizer state
    with pytest.raises(KeyboardInterrupt):
        t.fit(DATA, epochs=EPOCHS)
    return load_npz(ck, "rnnc-checkpoint")


def resign(path, arrays, meta):
    """Write ``arrays`` and ``meta`` as a checkpoint signed with the checkpoint's own digest function."""
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "sha256")}
    atomic_savez(path, arrays, meta, "rnnc-checkpoint")
    assert load_npz(path, "rnnc-checkpoint")[1]["sha256"] == digest(arrays)


_NOT_INT = st.one_of(st.text(max_size=5), st.floats(), st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
                     st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
_BAD = {
    "epoch": st.one_of(_NOT_INT, st.integers(max_value=-1), st.integers(min_value=2**31)),
    "batch_index": st.one_of(_NOT_INT, st.integers(max_value=-1), st.integers(min_value=2**31)),
    "seed": st.one_of(_NOT_INT, st.integers(max_value=-1)),
    "batch_size": st.one_of(_NOT_INT, st.integers(max_value=0)),
    "dtype": st.one_of(st.integers(), st.none(), st.lists(st.text(), max_size=1)),
    "optimizer": st.one_of(st.integers(), st.none(), st.booleans()),
    "spec": st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2)),
    "partial": st.one_of(st.integers(), st.text(max_size=3), st.none()),
    "partial.loss": st.one_of(st.text(max_size=3), st.none(), st.booleans(), st.lists(st.floats(), max_size=1)),
    "partial.correct": st.one_of(_NOT_INT, st.integers(max_value=-1)),
    "partial.seen": st.one_of(_NOT_INT, st.integers(max_value=-1)),
    "history": st.one_of(st.integers(), st.text(max_size=3), st.dictionaries(st.text(max_size=2), st.integers())),
    "history[0]": st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2)),
    "history[0].loss": st.one_of(st.text(max_size=3), st.none(), st.booleans()),
}
_MISSING = object()


@given(field=st.sampled_from(sorted(_BAD) + [f"-{k}" for k in CHECKPOINT_SCHEMA if k not in
                                              ("format", "version", "sha256")] + ["-partial.seen"]),
       data=st.data())
def test_malformed_metadata_is_refused_naming_file_and_field(tmp_path_factory, saved, field, data):
    arrays, meta = saved
    meta = json.loads(json.dumps(meta))
    missing = field.startswith("-")
    name = field.lstrip("-")
    parent, key = meta, name
    if "." in name:
        head, key = name.rsplit(".", 1)
        parent = meta[head] if "[" not in head else meta["history"][0]
    elif name.startswith("history["):
        parent, key = meta["history"], 0
    if missing:
        del parent[key]
    else:
        parent[key] = data.draw(_BAD[name], label=name)
    path = str(tmp_path_factory.mktemp("bad") / "bad.npz")
    resign(path, arrays, meta)
    with pytest.raises(CheckpointError) as err:
        trainer().resume(path)
    one_line_naming(err, path, f"field {name}")


@pytest.mark.parametrize("value", [10**9, 6])
def test_batch_index_beyond_the_epoch_is_refused_at_fit(tmp_path, saved, value):
    arrays, meta = saved
    path = str(tmp_path / "bad.npz")
    resign(path, arrays, {**meta, "batch_index": value})
    t = trainer().resume(path)
    with pytest.raises(CheckpointError) as err:
        t.fit(DATA, epochs=EPOCHS)
    one_line_naming(err, path, "field batch_index", "[0, 5]", str(value))


def test_partial_sums_must_match_the_position(tmp_path, saved):
    arrays, meta = saved
    path = str(tmp_path / "bad.npz")
    resign(path, arrays, {**meta, "partial": {**meta["partial"], "seen": 5}})
    with pytest.raises(CheckpointError) as err:
        trainer().resume(path).fit(DATA, epochs=EPOCHS)
    one_line_naming(err, path, "field partial.seen", "expected 24")


@pytest.mark.parametrize("change, field", [
    (lambda a: a.pop("optim/state.v.dense1_W"), "optim/state.v.dense1_W"),
    (lambda a: a.pop("optim/t"), "optim/t"),
    (lambda a: a.update({"optim/t": np.array([1, 2])}), "optim/t"),
    (lambda a: a.update({"optim/state.v.dense2_b": np.zeros(7)}), "optim/state.v.dense2_b"),
    (lambda a: a.update({"optim/state.v.nothing": np.zeros(2)}), "optim/state.v.nothing"),
    (lambda a: a.update({"param/dense1_W": np.zeros((6, 5), np.float32)}), "param/dense1_W"),
    (lambda a: a.pop("buffer/" + next(k[7:] for k in a if k.startswith("buffer/"))), "buffer/"),
    (lambda a: a.update({"extra": np.zeros(1)}), "extra"),
    (lambda a: [a.pop(k) for k in list(a) if k.startswith("optim/state.")], "optim/state."),
])
def test_malformed_arrays_are_refused_naming_file_and_array(tmp_path, saved, change, field):
    arrays, meta = saved
    arrays = dict(arrays)
    change(arrays)
    path = str(tmp_path / "bad.npz")
    resign(path, arrays, meta)
    with pytest.raises(CheckpointError) as err:
        trainer().resume(path)
    one_line_naming(err, path, f"field {field}")


def test_history_must_have_one_row_per_epoch(tmp_path, saved):
    arrays, meta = saved
    path = str(tmp_path / "bad.npz")
    resign(path, arrays, {**meta, "history": []})
    with pytest.raises(CheckpointError) as err:
        trainer().resume(path)
    one_line_naming(err, path, "field history", "1 rows")


# ------------------------------------------------------------------------------------------ model files
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    t = trainer()
    t.fit(DATA, epochs=1)
    path = str(tmp_path_factory.mktemp("model") / "m")
    save_model(path, t.model, t.params, t.buffers)
    with open(path + ".json") as f:
        return json.load(f), load_npz(path + ".npz", "rnnc-model")[0]


def write_model(path, spec, arrays):
    """A model file pair holding ``spec`` as rnnc would write it (the .npz signed, the .json matching it)."""
    atomic_savez(path + ".npz", arrays, {"spec": spec}, "rnnc-model")
    meta = {"format": "rnnc-model", "version": 1, "arrays": os.path.basename(path) + ".npz",
            "sha256": digest(arrays), "spec": spec}
    with open(path + ".json", "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize("edit, field", [
    (lambda s: s["layers"][0].update(units="4"), "spec.layers[0].units"),
    (lambda s: s["layers"][0].update(layer="class"), "spec.layers[0]"),
    (lambda s: s.update(name="class"), "spec.name"),
    (lambda s: s["layers"].insert(1, {"layer": "Activation", "name": "class"}), "spec.layers[1].name"),
    (lambda s: s["layers"][0].pop("units"), "spec.layers[0]"),
    (lambda s: s.update(input_shape="5"), "spec.input_shape"),
    (lambda s: s["layers"].insert(0, {"layer": "Flatten"}) or s.update(input_shape=[5, 0]), "spec.input_shape"),
    (lambda s: s["layers"].insert(0, {"layer": "Conv2d", "filters": 2, "kernel": 3}), "spec.layers[0]"),
])
def test_malformed_model_spec_names_file_and_field(tmp_path, model_file, edit, field):
    meta, arrays = model_file
    spec = json.loads(json.dumps(meta["spec"]))
    edit(spec)
    path = str(tmp_path / "m")
    write_model(path, spec, arrays)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    one_line_naming(err, path + ".json", f"field {field}")
    assert os.path.basename(__file__) not in str(err.value)   # never the caller's line


def test_undecodable_or_deep_model_description_names_the_file(tmp_path, model_file):
    meta, arrays = model_file
    path = str(tmp_path / "m")
    write_model(path, meta["spec"], arrays)
    raw = open(path + ".json", "rb").read()
    open(path + ".json", "wb").write(raw.replace(b'"classifier"', b'"classi\xff\xfeer"'))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    one_line_naming(err, path + ".json", "field spec.name", "not UTF-8", "0xff")
    open(path + ".json", "wb").write(b'{"format": "rnnc-model", "spec": ' + b"[" * 10**5 + b"]" * 10**5 + b"}")
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    one_line_naming(err, path + ".json", "nested 100001 levels", "at most 64")
    open(path + ".json", "wb").write(b'{"format": "rnnc-model", "version": 1, "spec": ' + b"9" * 5000 + b"}")
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    one_line_naming(err, path + ".json", "not valid JSON")


def test_deep_or_undecodable_checkpoint_metadata_names_the_file(tmp_path):
    for i, blob in enumerate([b'{"format": "\xff"}', b"[" * 10**5 + b"]" * 10**5]):
        path = str(tmp_path / f"c{i}.npz")
        np.savez(path, __meta__=np.frombuffer(blob, dtype=np.uint8))
        with pytest.raises(CheckpointError) as err:
            trainer().resume(path)
        one_line_naming(err, path, "UTF-8" if i == 0 else "nested")


# ------------------------------------------------------------------------------------------ nothing is executed
def test_np_load_never_allows_pickles_in_rnnc():
    """Every ``np.load`` in the package passes ``allow_pickle=False``; nothing imports pickle."""
    offenders = []
    for path in sorted((ROOT / "rnnc").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("np", "numpy"):
                safe = any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
                           for k in node.keywords)
                if not safe:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports pickle")
    assert offenders == []


def test_a_pickled_array_in_a_checkpoint_is_refused(tmp_path):
    path = str(tmp_path / "p.npz")
    meta = json.dumps({"format": "rnnc-checkpoint", "version": 1}).encode()
    np.savez(path, evil=np.array([{"a": 1}], dtype=object), __meta__=np.frombuffer(meta, dtype=np.uint8))
    with pytest.raises(CheckpointError) as err:
        trainer().resume(path)
    one_line_naming(err, path, "truncated or corrupt")


def test_a_checkpoint_from_before_the_lecture_names_says_why(tmp_path, saved):
    """A spec saved before rnnc.nn took the lecture's names (no ``weight_names`` mark) is refused with the
    reason, not only as a spec that differs."""
    arrays, meta = saved
    old = nn.Classifier((nn.SpatialRNN(4), nn.Flatten(), nn.Dense(2), nn.Softmax()), (1, 4, 4)).spec()
    del old["layers"][0]["weight_names"]
    path = str(tmp_path / "old.npz")
    resign(path, arrays, {**meta, "spec": old})
    with pytest.raises(CheckpointError) as err:
        trainer().resume(path)
    one_line_naming(err, path, "spec.layers[0]", "older rnnc")
