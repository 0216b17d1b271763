"""Portable model files (``rc.save`` / ``rc.load``): a saved model runs bit-identically in a new process without
its source, for the interpreter and the compiled CPU engine; tampered, unknown-op, wrong-version and badly named
files are refused with the file and the field named."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from paths import REPO as ROOT
from zoo import ZOO

import rnnc as rc
from rnnc.io import LoadedModel, ModelFileError
from rnnc.runtime.graph_key import graph_key
from rnnc.train.checkpoint import atomic_savez

NEW_PROCESS_MODELS = ("lstm", "bidirectional", "renet", "variable_length", "encoder_decoder")
T, B = 4, 3

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import rnnc as rc

    assert "zoo" not in sys.modules
    for name in sys.argv[1:]:
        model, params = rc.load(f"{name}.rnnc")
        data = np.load(f"{name}_data.npz", allow_pickle=False)
        inputs = {k[3:]: data[k] for k in data.files if k.startswith("in/")}
        sizes = {k[5:]: int(data[k]) for k in data.files if k.startswith("size/")}
        r = rc.interpret(model, inputs, params, sizes=sizes)
        c = rc.compile(model).forward(inputs, params)
        out = {f"interp/{k}": v for k, v in r.outputs.items()}
        out.update({f"compiled/{k}": v for k, v in c.outputs.items()})
        np.savez(f"{name}_out.npz", interp_loss=r.loss, compiled_loss=c.loss, **out)
""")


def _case_data(name):
    case = ZOO[name]()
    params = {k: v.astype(np.float32) for k, v in case.params(seed=3).items()}
    inputs = case.make_inputs(np.random.default_rng(4), T, B, np.float32)
    return case, params, inputs


def test_saved_models_run_bit_identically_in_a_new_process(tmp_path):
    expected = {}
    for name in NEW_PROCESS_MODELS:
        case, params, inputs = _case_data(name)
        rc.save(tmp_path / f"{name}.rnnc", case.model, params)
        sizes = case.sizes(T)
        np.savez(tmp_path / f"{name}_data.npz", **{f"in/{k}": v for k, v in inputs.items()},
                 **{f"size/{k}": np.int64(v) for k, v in sizes.items()})
        r = rc.interpret(case.model, inputs, params, sizes=sizes)
        c = rc.compile(case.model).forward(inputs, params)
        expected[name] = (r, c)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, *NEW_PROCESS_MODELS], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, (r, c) in expected.items():
        got = np.load(tmp_path / f"{name}_out.npz")
        assert float(got["interp_loss"]) == r.loss and float(got["compiled_loss"]) == c.loss, name
        for k in r.outputs:
            assert np.array_equal(got[f"interp/{k}"], r.outputs[k]), (name, k)
            assert np.array_equal(got[f"compiled/{k}"], c.outputs[k]), (name, k)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_round_trips_to_the_same_graph(name, tmp_path):
    case = ZOO[name]()
    params = case.params(seed=1)
    rc.save(tmp_path / "m.rnnc", case.model, params)
    model, loaded = rc.load(tmp_path / "m.rnnc")
    assert isinstance(model, rc.Model) and isinstance(model, LoadedModel)
    assert graph_key(model.graph) == graph_key(case.model.graph)
    assert all(np.array_equal(loaded[k], params[k]) and loaded[k].dtype == params[k].dtype for k in params)
    assert sorted(model.inputs) == sorted(case.model.inputs) and sorted(model.outputs) == sorted(case.model.outputs)
    a, b = model.init_params(seed=5), case.model.init_params(seed=5)
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_loaded_model_trains_through_rc_grad_and_is_frozen(tmp_path):
    case, params, inputs = _case_data("gru")
    rc.save(tmp_path / "gru.rnnc", case.model, params)
    model, loaded = rc.load(tmp_path / "gru.rnnc")
    want = rc.interpret(rc.grad(case.model), inputs, params).grads
    got = rc.interpret(rc.grad(model), inputs, loaded).grads
    assert all(np.array_equal(want[k], got[k]) for k in want)
    with pytest.raises(rc.GraphError, match="frozen"):
        model.param("extra", 3)
    with pytest.raises(rc.GraphError, match="frozen"):
        model.loss(model.outputs["o"][0])


def test_array_initial_values_are_saved(tmp_path):
    m = rc.Model("fixed")
    x = m.input("x", 2)
    W = m.param("W", (2, 2), init=np.array([[1.0, 2.0], [3.0, 4.0]]))
    m.output("y", W @ x[rc.t])
    rc.save(tmp_path / "f.rnnc", m, {"W": np.eye(2)})
    model, params = rc.load(tmp_path / "f.rnnc")
    assert np.array_equal(model.init_params()["W"], m.init_params()["W"])
    assert np.array_equal(params["W"], np.eye(2))


# ------------------------------------------------------------------------------------------------ refusals
def _saved(tmp_path):
    case, params, _ = _case_data("elman")
    path = tmp_path / "m.rnnc"
    rc.save(path, case.model, params)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    spec = json.loads(arrays.pop("__spec__").tobytes())
    return path, arrays, meta, spec


def _rewrite(path, arrays, spec, meta_changes=None):
    """Write a well-formed file (valid digest) whose spec says ``spec``: what a foreign or newer writer makes."""
    arrays = {**arrays, "__spec__": np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8)}
    atomic_savez(str(path), arrays, {"spec_version": spec.get("version")}, "rnnc-portable-model")
    if meta_changes:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = {**json.loads(data["__meta__"].tobytes()), **meta_changes}
        data["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(path, **data)
        os.replace(f"{path}.npz", path)


def _node(spec, op):
    return next(n for n in spec["nodes"] if n["op"] == op)


def test_tampered_array_is_refused(tmp_path):
    path, arrays, meta, spec = _saved(tmp_path)
    arrays["param/W"] = arrays["param/W"] + 1
    arrays["__spec__"] = np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    os.replace(f"{path}.npz", path)
    with pytest.raises(ModelFileError, match=f"{path}.*checksum mismatch"):
        rc.load(path)


def test_tampered_spec_is_refused(tmp_path):
    path, arrays, meta, spec = _saved(tmp_path)
    spec["nodes"][0]["where"] = "elsewhere:1"
    arrays["__spec__"] = np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    os.replace(f"{path}.npz", path)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        rc.load(path)


@pytest.mark.parametrize("edit, match", [
    (lambda s: _node(s, "tanh").update(op="os_system"), r"nodes\[\d+\]\.op: unknown op 'os_system'"),
    (lambda s: s.update(version=2), r"__spec__\.version: 2 is newer"),
    (lambda s: s.update(version="1"), r"__spec__\.version: expected 1"),
    (lambda s: s["params"].update({"W-1": s["params"].pop("W")}), r"params\.W-1: param name 'W-1' is not a valid"),
    (lambda s: s.update(name="__import__"), r"__spec__\.name: model name '__import__'"),
    (lambda s: s.update(axes=["t;"]), r"axes\[0\]: axis name 't;'"),
    (lambda s: _node(s, "input").update(name="x y"), r"\.name: node name 'x y'"),
    (lambda s: _node(s, "ref")["attrs"].update(offset="-1"), r"attrs\.offset: expected int, got str"),
    (lambda s: _node(s, "ref")["attrs"].update(offset={"__class__": 1}), r"attrs\.offset: expected a JSON"),
    (lambda s: _node(s, "ref")["attrs"].update(value=3), r"attrs\.value: expected str, got int"),
    (lambda s: _node(s, "matmul").update(shape=[5]), r"nodes\[\d+\]\.shape: op 'matmul' gives \(\d,\) from its inputs"),
    (lambda s: _node(s, "param").update(shape=[3, 3]), r"\.shape: op 'param' gives"),
    (lambda s: _node(s, "tanh").update(inputs=[10 ** 6]), r"\.inputs\[0\]: index 1000000 is out of range"),
    (lambda s: s["param_inits"]["W"].update(init="eval"), r"param_inits\.W\.init: unknown initializer 'eval'"),
    (lambda s: s.update(extra=1), r"__spec__\.spec: expected the fields"),
])
def test_bad_specs_are_refused_naming_file_and_field(tmp_path, edit, match):
    path, arrays, _meta, spec = _saved(tmp_path)
    edit(spec)
    _rewrite(path, arrays, spec)
    with pytest.raises(ModelFileError, match=match) as info:
        rc.load(path)
    assert str(path) in str(info.value)


def test_param_shape_and_extra_arrays_are_refused(tmp_path):
    path, arrays, _meta, spec = _saved(tmp_path)
    _rewrite(path, {**arrays, "param/W": np.zeros((3, 3))}, spec)
    with pytest.raises(ModelFileError, match=r"param/W: expected floats of shape \(4, 4\)"):
        rc.load(path)
    _rewrite(path, {**arrays, "payload": np.zeros(2)}, spec)
    with pytest.raises(ModelFileError, match=r"arrays \['payload'\] are not described"):
        rc.load(path)


def test_wrong_container_version_and_non_model_files_are_refused(tmp_path):
    path, arrays, _meta, spec = _saved(tmp_path)
    _rewrite(path, arrays, spec, {"version": 99})
    with pytest.raises(ModelFileError, match="version 99"):
        rc.load(path)
    junk = tmp_path / "junk.rnnc"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="junk.rnnc"):
        rc.load(junk)


def test_save_refuses_params_that_do_not_fit(tmp_path):
    case, params, _ = _case_data("elman")
    with pytest.raises(ValueError, match=r"missing \['W'\]"):
        rc.save(tmp_path / "m.rnnc", case.model, {k: v for k, v in params.items() if k != "W"})
    with pytest.raises(ValueError, match="param 'W': expected floats of shape"):
        rc.save(tmp_path / "m.rnnc", case.model, {**params, "W": np.zeros(3)})
    with pytest.raises(ValueError, match="forward model"):
        rc.save(tmp_path / "m.rnnc", rc.grad(case.model).graph, params)
    assert not (tmp_path / "m.rnnc").exists()


def test_nn_image_model_with_grid_and_batch_norm_round_trips(tmp_path):
    import rnnc.nn as nn

    clf = nn.Classifier((nn.Conv2d(3, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
                         nn.SpatialRNN(block=(2, 2), hidden=2), nn.Flatten(), nn.Dense(3)), (1, 4, 4))
    net = clf.build(train=False)
    params = net.model.init_params(seed=0)
    rc.save(tmp_path / "img.rnnc", net, params)
    model, loaded = rc.load(tmp_path / "img.rnnc")
    inputs = {"x": np.random.default_rng(0).normal(size=(2, 1, 4, 4)), "y": np.array([0, 2])}
    want, got = rc.interpret(net.model, inputs, params), rc.interpret(model, inputs, loaded)
    assert got.loss == want.loss and np.array_equal(got.outputs["probs"], want.outputs["probs"])


def test_custom_initializer_falls_back_to_the_saved_values(tmp_path):
    class Twos(rc.init.Initializer):
        def __call__(self, rng, shape):
            return np.full(shape, 2.0)

    m = rc.Model("custom")
    x = m.input("x", 2)
    W = m.param("W", (2, 2), init=Twos())
    m.output("y", W @ x[rc.t])
    rc.save(tmp_path / "c.rnnc", m, {"W": np.eye(2)})
    model, _ = rc.load(tmp_path / "c.rnnc")
    assert np.array_equal(model.init_params()["W"], np.eye(2, dtype=np.float32))
