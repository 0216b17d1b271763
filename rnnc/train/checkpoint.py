"""Safe files: checkpoints and saved models are ``.npz`` archives read with ``allow_pickle=False`` plus JSON
metadata, written atomically (temporary file, fsync, rename) and verified on load (format, version, SHA-256
of every array). Nothing in a file is ever executed: layer types are looked up in a whitelist.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or saved model that cannot be trusted: truncated, tampered, wrong format or version."""


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
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_npz(path: str, kind: str) -> tuple[dict, dict]:
    """Read and verify a file written by :func:`atomic_savez`; returns (arrays, meta)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable rnnc {kind} file (truncated or corrupt: {e})") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: no rnnc metadata; not an rnnc {kind} file")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != kind:
        raise CheckpointError(f"{path}: expected an rnnc {kind} file, found format {meta.get('format')!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: {kind} format version {meta.get('version')!r}; this rnnc reads version "
                              f"{FORMAT_VERSION}")
    if digest(arrays) != meta.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch: the arrays were changed after saving")
    return arrays, meta


def split_prefixed(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def save_model(path: str, classifier, params: dict, buffers: dict | None = None) -> None:
    """Save a trained :class:`~rnnc.nn.Classifier`: its spec as JSON (``<path>.json``) and its arrays
    (``<path>.npz``, whose SHA-256 the JSON records)."""
    base = path[:-4] if path.endswith(".npz") else path[:-5] if path.endswith(".json") else path
    arrays = {**{f"param/{k}": np.asarray(v) for k, v in params.items()},
              **{f"buffer/{k}": np.asarray(v) for k, v in (buffers or {}).items()}}
    spec = classifier.spec()
    atomic_savez(base + ".npz", arrays, {"spec": spec}, "rnnc-model")
    meta = {"format": "rnnc-model", "version": FORMAT_VERSION, "arrays": os.path.basename(base) + ".npz",
            "sha256": digest(arrays), "spec": spec}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(os.path.abspath(base)))
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, base + ".json")


def load_model(path: str):
    """Load a model saved by :func:`save_model`; returns (classifier, params, buffers). Refuses files whose
    version, checksum, spec or array names and shapes do not match, with an error saying which."""
    from rnnc.nn.classifier import Classifier

    base = path[:-4] if path.endswith(".npz") else path[:-5] if path.endswith(".json") else path
    try:
        with open(base + ".json") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{base}.json: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != "rnnc-model":
        raise CheckpointError(f"{base}.json: not an rnnc model description")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{base}.json: model format version {meta.get('version')!r}; this rnnc reads "
                              f"version {FORMAT_VERSION}")
    arrays, npz_meta = load_npz(base + ".npz", "rnnc-model")
    if npz_meta.get("sha256") != meta.get("sha256") or npz_meta.get("spec") != meta.get("spec"):
        raise CheckpointError(f"{base}: the .json and .npz files do not belong together")
    try:
        clf = Classifier.from_spec(meta["spec"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{base}.json: bad model spec: {e}") from None
    params, buffers = split_prefixed(arrays, "param/"), split_prefixed(arrays, "buffer/")
    _check_arrays(base, clf, params, buffers)
    return clf, params, buffers


def _check_arrays(base, clf, params, buffers):
    net = clf.build(train=True)
    want = {k: n.shape for k, n in net.model.params.items()}
    if set(want) != set(params) or any(params[k].shape != s for k, s in want.items()):
        raise CheckpointError(f"{base}.npz: params do not match the spec (expected {sorted(want)})")
    if set(net.buffers) != set(buffers):
        raise CheckpointError(f"{base}.npz: buffers do not match the spec (expected {sorted(net.buffers)})")
