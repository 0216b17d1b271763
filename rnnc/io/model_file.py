"""Portable model files: ``rc.save(path, model, params)`` and ``model, params = rc.load(path)``.

A ``.rnnc`` file is an ``.npz`` archive (read with ``allow_pickle=False``) written atomically by
:func:`rnnc.train.checkpoint.atomic_savez`. It holds

* ``__spec__``: the model's lowered graph as UTF-8 JSON (:mod:`rnnc.io.spec`), stored as a ``uint8`` array;
* ``param/<name>``: each parameter's array, in the dtype it was saved with;
* ``init/<name>``: fixed initial values given as arrays (``m.param(..., init=array)``);
* ``__meta__``: format name, container version and the SHA-256 of every array above, ``__spec__`` included.

Loading verifies the digest, the versions, every name, op, attr and shape, and rebuilds the graph with the
ops' own rules; nothing in the file is executed. See ``docs/files.md``.
"""
from __future__ import annotations

import json
import os

import numpy as np

from rnnc.dsl.model import Model
from rnnc.dsl.values import Signal
from rnnc.errors import GraphError, RnncError
from rnnc.io.spec import SPEC_VERSION, SpecError, graph_to_spec, spec_to_graph
from rnnc.ir.graph import Graph
from rnnc.schedule.schedule import build_schedule
from rnnc.train.checkpoint import CheckpointError, atomic_savez, load_npz

KIND = "rnnc-portable-model"


class ModelFileError(CheckpointError):
    """A model file that cannot be read or trusted; the message names the file and the field at fault."""


class LoadedModel(Model):
    """A model rebuilt from a file: its lowered graph, ready for ``rc.interpret``, ``rc.compile`` and
    ``rc.grad``. It is frozen: declaring inputs, params, signals, outputs or loss terms is refused, since
    its equations are already lowered (lengths masks applied, loss terms summed)."""

    def __init__(self, graph: Graph, path: str):
        super().__init__(graph.name)
        self.path = str(path)
        self._loaded = graph
        self.inputs, self.params = dict(graph.inputs), dict(graph.params)
        self.param_inits, self.outputs = dict(graph.param_inits), dict(graph.outputs)
        self.loss_terms = [graph.loss] if graph.loss is not None else []
        self.initials = dict(graph.inits)
        self.lengths = {axis: node.name for axis, node in graph.lengths.items()}
        for name in graph.signals:
            node = graph.values[name]
            sig = Signal(self, name, node.shape, node.where, node.axes)
            sig.definition, sig.defined_at = node, node.where
            self.signals[name] = sig

    @property
    def graph(self) -> Graph:
        return self._loaded

    def _frozen(self, *args, **kwargs):
        raise GraphError(f"model {self.name!r} was loaded from {self.path} and is frozen; build a new rc.Model "
                         f"to change its equations")

    _claim = _changed = loss = initial = _frozen


def _graph_of(model) -> Graph:
    inner = getattr(model, "model", None)           # an nn.Network
    obj = inner if isinstance(inner, Model) else model
    if isinstance(obj, Graph):
        return obj
    if isinstance(obj, Model) or isinstance(getattr(obj, "graph", None), Graph):
        return obj.graph
    raise TypeError(f"rc.save takes an rc.Model (or nn.Network), got {type(model).__name__}")


def _param_arrays(graph: Graph, params: dict) -> dict:
    missing = sorted(set(graph.params) - set(params))
    extra = sorted(set(params) - set(graph.params))
    if missing or extra:
        raise ValueError(f"rc.save: params of model {graph.name!r} must be exactly {sorted(graph.params)}; "
                         f"missing {missing}, unknown {extra}")
    out = {}
    for name, node in graph.params.items():
        arr = np.asarray(params[name])
        if arr.shape != node.shape or arr.dtype.kind != "f":
            raise ValueError(f"rc.save: param {name!r}: expected floats of shape {node.shape}, got {arr.dtype} "
                             f"{arr.shape}")
        out[f"param/{name}"] = arr
    return out


def save(path, model, params: dict) -> None:
    """Write ``model`` and ``params`` to one portable file at ``path`` (conventionally ``*.rnnc``).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. It is replaced atomically: a crash leaves the old file or the new one.
    model : rc.Model or nn.Network
        The model; its lowered graph is saved (ops by registered name, attrs, shapes, axes, initial values).
    params : dict of str to ndarray
        One float array per param of the model, saved in its own dtype.

    Raises
    ------
    ValueError
        If ``params`` do not match the model, or the spec would not load back (an attribute with no JSON form,
        a name that is not an identifier, two loop axes with one name): the file is then not written.
    """
    graph = _graph_of(model)
    try:
        spec, init_arrays = graph_to_spec(graph)
        arrays = {**_param_arrays(graph, params), **init_arrays}
        text = json.dumps(spec)
        spec_to_graph(json.loads(text), arrays)     # what load would refuse is refused now, not after saving
    except SpecError as e:
        raise ValueError(f"rc.save({os.fspath(path)!r}): cannot describe the model: {e}") from None
    arrays["__spec__"] = np.frombuffer(text.encode(), dtype=np.uint8)
    atomic_savez(os.fspath(path), arrays, {"spec_version": SPEC_VERSION}, KIND)


def load(path) -> tuple[LoadedModel, dict]:
    """Read a file written by :func:`save`: ``model, params = rc.load("model.rnnc")``.

    The source code of the model is not needed. The file is verified before anything is built: the SHA-256
    over the spec and every array, the container and spec versions, every name (identifiers only), op
    (registered ones only), attr (JSON values only) and shape (each node is rebuilt with its op's shape rule
    and must give the recorded shape). Nothing in the file is executed (no pickle, no eval).

    Returns
    -------
    model : LoadedModel
        An ``rc.Model`` whose ``graph`` equals the saved one; frozen.
    params : dict of str to ndarray
        The saved params, in their saved dtypes.

    Raises
    ------
    ModelFileError
        Naming the file and the field at fault (a ``CheckpointError``, so a ``ValueError``).
    """
    path = os.fspath(path)
    try:
        arrays, _meta = load_npz(path, KIND)
    except ModelFileError:
        raise
    except CheckpointError as e:
        raise ModelFileError(str(e)) from None
    spec = _read_spec(path, arrays.pop("__spec__", None))
    try:
        graph = spec_to_graph(spec, arrays)
    except SpecError as e:
        raise ModelFileError(f"{path}: __spec__.{e}") from None
    try:
        build_schedule(graph)
    except RnncError as e:
        raise ModelFileError(f"{path}: __spec__: the graph does not schedule: {e}") from None
    return LoadedModel(graph, path), _read_params(path, graph, arrays)


def _read_spec(path: str, raw) -> dict:
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{path}: __spec__: missing or not a uint8 byte array")
    try:
        spec = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: __spec__: not valid JSON ({e})") from None
    version = spec.get("version") if isinstance(spec, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SPEC_VERSION:
        raise ModelFileError(f"{path}: __spec__.version: {version} is newer than this rnnc reads "
                             f"({SPEC_VERSION}); upgrade rnnc")
    if version != SPEC_VERSION:
        raise ModelFileError(f"{path}: __spec__.version: expected {SPEC_VERSION}, got {version!r}")
    return spec


def _read_params(path: str, graph: Graph, arrays: dict) -> dict:
    known = {f"param/{p}" for p in graph.params}
    known |= {f"init/{p}" for p, spec in graph.param_inits.items() if isinstance(spec, np.ndarray)}
    extra = sorted(set(arrays) - known)
    if extra:
        raise ModelFileError(f"{path}: arrays {extra} are not described by __spec__")
    params = {}
    for name, node in graph.params.items():
        arr = arrays.get(f"param/{name}")
        if arr is None:
            raise ModelFileError(f"{path}: param/{name}: missing (expected shape {node.shape})")
        if arr.shape != node.shape or arr.dtype.kind != "f":
            raise ModelFileError(f"{path}: param/{name}: expected floats of shape {node.shape}, got {arr.dtype} "
                                 f"{arr.shape}")
        params[name] = arr
    return params
