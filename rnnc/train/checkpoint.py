"""Safe files: checkpoints and saved models are ``.npz`` archives read with ``allow_pickle=False`` plus JSON
metadata, written atomically (temporary file, fsync, rename; :mod:`rnnc.train.files`) and verified on load
(format, version, SHA-256 of every array, then every metadata field against :data:`CHECKPOINT_SCHEMA` and every
array against the model and optimizer it is loaded into). Nothing in a file is ever executed: layer types are
looked up in a whitelist. Every refusal is one :class:`CheckpointError` line naming the file and the field.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import traceback
import zipfile

import numpy as np

from rnnc.train.files import CheckpointError, atomic_write, one_line, parse_json, remove_stale_temps, show

FORMAT_VERSION = 1
__all__ = ["CheckpointError", "CHECKPOINT_SCHEMA", "FORMAT_VERSION", "atomic_savez", "check_meta", "digest",
           "load_checkpoint", "load_model", "load_npz", "save_model", "split_prefixed"]


def digest(arrays: dict) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def atomic_savez(path: str, arrays: dict, meta: dict, kind: str) -> None:
    """Write ``arrays`` and JSON ``meta`` to ``path`` atomically: a crash leaves the old file or the new one."""
    meta = {"format": kind, "version": FORMAT_VERSION, "sha256": digest(arrays), **meta}
    payload = {**arrays, "__meta__": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    atomic_write(path, lambda f: np.savez(f, **payload), ".npz")


def load_npz(path: str, kind: str) -> tuple[dict, dict]:
    """Read and verify a file written by :func:`atomic_savez`; returns (arrays, meta)."""
    remove_stale_temps(os.path.dirname(os.path.abspath(path)))
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, MemoryError) as e:
        raise CheckpointError(f"{path}: not a readable rnnc {kind} file (truncated or corrupt: {e})") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: no rnnc metadata; not an rnnc {kind} file")
    meta = parse_json(path, arrays.pop("__meta__").tobytes(), "metadata")
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    if found != kind:
        raise CheckpointError(f"{path}: expected an rnnc {kind} file, found format {found!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: {kind} format version {meta.get('version')!r}; this rnnc reads version "
                              f"{FORMAT_VERSION}")
    if digest(arrays) != meta.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch: the arrays were changed after saving")
    return arrays, meta


def split_prefixed(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------- the schema
def _int(lo: int, hi: int) -> tuple:
    return f"an integer in [{lo}, {hi}]", lambda v: type(v) is int and lo <= v <= hi


_NUMBER = ("a number", lambda v: type(v) in (int, float))
_TEXT = ("a string", lambda v: isinstance(v, str))
_COUNT = _int(0, 2**62)

#: Every metadata field of a checkpoint. A rule is ``(expected, test)``, a dict of fields (``"*"``: any name)
#: or a one-rule list (a list of such values). Extra and missing fields are refused.
CHECKPOINT_SCHEMA = {
    "format": _TEXT, "version": _int(FORMAT_VERSION, FORMAT_VERSION), "sha256": _TEXT,
    "epoch": _int(0, 2**31 - 1),          # epochs done
    "batch_index": _int(0, 2**31 - 1),    # batches done in the epoch in progress; < its batch count (fit checks)
    "seed": _int(0, 2**63 - 1),
    "batch_size": _int(1, 2**31 - 1),
    "dtype": _TEXT,
    "optimizer": _TEXT,
    "spec": ("a model spec (object) or null", lambda v: v is None or isinstance(v, dict)),
    "partial": {"loss": _NUMBER, "seen": _COUNT,                          # sums over the epoch in progress:
                "correct": _COUNT, "sq": _NUMBER, "count": _COUNT},         # the metric's (rnnc.train.metrics)
    "history": [{"*": _NUMBER}],                                        # one row per epoch done
}


def _bad(path, where, expected, value) -> CheckpointError:
    return CheckpointError(f"{path}: field {where}: expected {expected}, got {show(value)}")


def check_meta(path: str, meta, schema: dict = CHECKPOINT_SCHEMA, root: str = "") -> None:
    """Check ``meta`` against ``schema``; the first violation raises :class:`CheckpointError` naming the file,
    the field (``partial.seen``, ``history[2].loss``; under ``root`` if given), the value and what was expected."""
    stack = [(root, meta, schema)]
    while stack:
        where, value, rule = stack.pop()
        if isinstance(rule, tuple):
            if not rule[1](value):
                raise _bad(path, where, rule[0], value)
        elif isinstance(rule, list):
            if not isinstance(value, list):
                raise _bad(path, where, "a list", value)
            stack.extend((f"{where}[{i}]", v, rule[0]) for i, v in reversed(list(enumerate(value))))
        else:
            if not isinstance(value, dict):
                raise _bad(path, where or "(top level)", "an object", value)
            dot = f"{where}." if where else ""
            if "*" not in rule:
                missing = [k for k in rule if k not in value]
                if missing:
                    raise CheckpointError(f"{path}: field {dot}{missing[0]}: missing (expected "
                                          f"{_expected(rule[missing[0]])})")
                extra = [k for k in value if k not in rule]
                if extra:
                    raise CheckpointError(f"{path}: field {dot}{show(extra[0])[1:-1]}: not a field of this format "
                                          f"(expected only {sorted(rule)})")
            stack.extend((f"{dot}{k}", v, rule.get(k, rule.get("*"))) for k, v in reversed(list(value.items())))


def _expected(rule) -> str:
    return rule[0] if isinstance(rule, tuple) else "a list" if isinstance(rule, list) else "an object"


# ---------------------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str, params: dict, buffers: dict, optimizer, config: dict) -> tuple[dict, dict, dict, dict]:
    """Read and check a checkpoint for a trainer whose current ``params``, ``buffers``, ``optimizer`` and
    ``config`` (seed, dtype, batch size, optimizer name, spec) it must fit. Returns (params, buffers, optimizer
    state, meta); anything that does not fit raises :class:`CheckpointError`."""
    arrays, meta = load_npz(path, "rnnc-checkpoint")
    check_meta(path, meta)
    for key, mine in config.items():
        if meta[key] != mine:
            if key == "spec" and isinstance(meta[key], dict):
                _classifier(path, meta[key])   # a spec this rnnc cannot build (an older one) says why
            raise CheckpointError(f"{path}: field {key}: written with {key}={show(meta[key])}, this trainer has "
                                  f"{show(mine)}")
    if len(meta["history"]) != meta["epoch"]:
        raise _bad(path, "history", f"{meta['epoch']} rows (one per epoch done)", f"{len(meta['history'])} rows")
    groups = {"param/": {}, "buffer/": {}, "optim/": {}}
    for name, a in arrays.items():
        prefix = next((p for p in groups if name.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(f"{path}: field {name}: not an array of a checkpoint (param/, buffer/, optim/)")
        groups[prefix][name[len(prefix):]] = a
    _match(path, "param/", groups["param/"], params)
    _match(path, "buffer/", groups["buffer/"], buffers)
    state = groups["optim/"]
    t = state.get("t")
    if t is None or np.shape(t) != () or t.dtype.kind not in "iu" or int(t) < 0:
        raise _bad(path, "optim/t", "the optimizer's step count (an integer scalar >= 0)", t)
    _match(path, "optim/", {k: v for k, v in state.items() if k != "t"}, _optimizer_state(optimizer, params, int(t)))
    return groups["param/"], groups["buffer/"], state, meta


def _optimizer_state(optimizer, params: dict, t: int) -> dict:
    """The state arrays ``optimizer`` holds after ``t`` steps on ``params``: none before the first step; after
    it, what one step of a copy on zero gradients creates (so any optimizer of :mod:`rnnc.train.optim`)."""
    if t == 0:
        return {}
    probe = copy.copy(optimizer)
    probe.state, probe.t = {}, 0
    probe.step({k: np.array(v) for k, v in params.items()}, {k: np.zeros_like(v) for k, v in params.items()})
    return {k: np.asarray(v) for k, v in probe.state_dict().items() if k != "t"}


def _match(path: str, prefix: str, got: dict, want: dict) -> None:
    """Same names, shapes and dtypes as ``want``; else a :class:`CheckpointError` naming the array."""
    for name, w in want.items():
        w = np.asarray(w)
        expected = f"shape {w.shape} {w.dtype}"
        if name not in got:
            raise CheckpointError(f"{path}: field {prefix}{name}: missing (expected {expected})")
        if got[name].shape != w.shape or got[name].dtype != w.dtype:
            raise _bad(path, prefix + name, expected, f"shape {got[name].shape} {got[name].dtype}")
    extra = sorted(set(got) - set(want))
    if extra:
        raise CheckpointError(f"{path}: field {prefix}{extra[0]}: not in this trainer (expected only "
                              f"{sorted(want) or 'none'})")


# ---------------------------------------------------------------------------------------------- model files
_MODEL_SCHEMA = {"format": _TEXT, "version": _int(FORMAT_VERSION, FORMAT_VERSION), "arrays": _TEXT,
                 "sha256": _TEXT, "spec": ("a model spec (object)", lambda v: isinstance(v, dict))}


def _base(path: str) -> str:
    return path[:-4] if path.endswith(".npz") else path[:-5] if path.endswith(".json") else path


def save_model(path: str, classifier, params: dict, buffers: dict | None = None) -> None:
    """Save a trained :class:`~rnnc.nn.Classifier`: its spec as JSON (``<path>.json``) and its arrays
    (``<path>.npz``, whose SHA-256 the JSON records)."""
    base = _base(path)
    arrays = {**{f"param/{k}": np.asarray(v) for k, v in params.items()},
              **{f"buffer/{k}": np.asarray(v) for k, v in (buffers or {}).items()}}
    spec = classifier.spec()
    atomic_savez(base + ".npz", arrays, {"spec": spec}, "rnnc-model")
    meta = {"format": "rnnc-model", "version": FORMAT_VERSION, "arrays": os.path.basename(base) + ".npz",
            "sha256": digest(arrays), "spec": spec}
    atomic_write(base + ".json", lambda f: f.write(json.dumps(meta, indent=1).encode()), ".json")


def load_model(path: str):
    """Load a model saved by :func:`save_model`; returns (classifier, params, buffers). Refuses files whose
    version, checksum, spec or array names and shapes do not match, with one line naming the file and field."""
    base = _base(path)
    with open(base + ".json", "rb") as f:
        meta = parse_json(base + ".json", f.read(), "model description")
    if not isinstance(meta, dict) or meta.get("format") != "rnnc-model":
        raise CheckpointError(f"{base}.json: not an rnnc model description")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{base}.json: model format version {meta.get('version')!r}; this rnnc reads "
                              f"version {FORMAT_VERSION}")
    check_meta(base + ".json", meta, _MODEL_SCHEMA)
    arrays, npz_meta = load_npz(base + ".npz", "rnnc-model")
    if npz_meta.get("sha256") != meta.get("sha256") or npz_meta.get("spec") != meta.get("spec"):
        raise CheckpointError(f"{base}: the .json and .npz files do not belong together")
    clf, net = _classifier(base + ".json", meta["spec"])
    params, buffers = split_prefixed(arrays, "param/"), split_prefixed(arrays, "buffer/")
    want = {k: n.shape for k, n in net.model.params.items()}
    if set(want) != set(params) or any(params[k].shape != s for k, s in want.items()):
        raise CheckpointError(f"{base}.npz: params do not match the spec (expected {sorted(want)})")
    if set(net.buffers) != set(buffers):
        raise CheckpointError(f"{base}.npz: buffers do not match the spec (expected {sorted(net.buffers)})")
    return clf, params, buffers


_AT_LINE = re.compile(r"\s*\(?\bat \S+:\d+\)?\s*$")


def _classifier(path: str, spec: dict):
    """The classifier a spec read from ``path`` describes, and its training network. rnnc.nn checks every field
    (:class:`~rnnc.nn.SpecError` naming it: ``layers[2].units: ...``); whatever still fails while building is
    pinned to the top-level layer whose ``build`` raised it. Either way: one line naming the file and the field,
    never the ``file:line`` of rnnc's caller."""
    from rnnc.nn import SpecError
    from rnnc.nn.classifier import Classifier

    try:
        clf = Classifier.from_spec(spec)
    except SpecError as e:
        field, _, problem = one_line(e, 400).partition(": ")
        raise CheckpointError(f"{path}: field spec.{field}: {problem}") from None
    try:
        net = clf.build(train=True)
        clf.build(train=False)
    except Exception as e:   # noqa: BLE001 - a spec that passed the field checks and still does not build
        reason = _AT_LINE.sub("", one_line(e, 400))
        raise CheckpointError(f"{path}: field {_layer_at_fault(e, clf.layers)}: {type(e).__name__}: {reason}") from e
    return clf, net


def _layer_at_fault(err: BaseException, layers) -> str:
    index = {id(layer): i for i, layer in enumerate(layers)}
    for frame, _ in traceback.walk_tb(err.__traceback__):
        i = index.get(id(frame.f_locals.get("self")))
        if i is not None:
            return f"spec.layers[{i}]"
    return "spec.layers"
