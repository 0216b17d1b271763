"""A lowered :class:`~rnnc.ir.Graph` as a code-free JSON spec, and back.

The spec lists the graph's nodes in topological order; a node names its op by its registered name, its
inputs by earlier positions, and carries its attrs as JSON values (tuples as lists, loop axes as
``{"axis": k}``, ``k`` indexing the spec's ``axes`` list), its shape, dtype, loop axes and batch flag.
Reading rebuilds every node with :func:`rnnc.ops.make`, so the op's own shape rule checks it, and refuses
anything the spec does not describe exactly. Nothing is evaluated: names are checked as identifiers, ops
are looked up in the registry, attrs must be plain JSON values.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from rnnc.dsl import init as inits
from rnnc.dsl.model import check_name
from rnnc.ir.graph import Graph
from rnnc.ir.node import Axis, Node
from rnnc.ops import OPS, make

SPEC_VERSION = 1
INITIALIZERS = {c.__name__: c for c in (inits.Constant, inits.Normal, inits.Uniform, inits.GlorotUniform,
                                        inits.Kaiming, inits.Orthogonal, inits.Identity)}
_REF_LABEL = re.compile(r"^(\w+)\[(\w+)[+-]\d+\]$")
_MAX_WHERE = 400


class SpecError(ValueError):
    """A spec field that cannot be read; ``field`` is its path in the spec (e.g. ``nodes[3].attrs.axis``)."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}")
        self.field = field


# ---------------------------------------------------------------------------------------------- writing
def _attr_to_json(value: Any, axes: dict, where: str) -> Any:
    if isinstance(value, Axis):
        return {"axis": axes.setdefault(value, len(axes))}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [_attr_to_json(v, axes, where) for v in value]
    raise SpecError(where, f"attribute value {value!r} of type {type(value).__name__} has no JSON form")


def _where(where: str) -> str:
    """A source location as the reader accepts it: printable, at most ``_MAX_WHERE`` characters (the end kept)."""
    text = "".join(c if c.isprintable() else "?" for c in str(where))
    return text[-_MAX_WHERE:]


def _init_to_json(name: str, spec) -> tuple[dict, dict]:
    """(JSON of a param's initializer, arrays it needs). Unknown initializer classes are stored as ``custom``:
    the loaded model's ``init_params`` then gives the saved param values."""
    if isinstance(spec, np.ndarray):
        return {"array": f"init/{name}"}, {f"init/{name}": spec}
    cls = type(spec).__name__
    if INITIALIZERS.get(cls) is type(spec):
        return {"init": cls, **{k: float(v) for k, v in vars(spec).items()}}, {}
    return {"custom": cls}, {}


def graph_to_spec(graph: Graph) -> tuple[dict, dict]:
    """The JSON spec of ``graph`` and the arrays of its fixed initial values (``init/<param>``)."""
    if graph.grads or graph.meta:
        raise SpecError("graph", f"{graph.name!r} is a derived graph (gradients or options); save the forward "
                                 "model and call rc.grad on the loaded one")
    axes = {a: k for k, a in enumerate(graph.axes())}
    for n in graph.nodes:
        for a in n.axes:
            axes.setdefault(a, len(axes))
    index = {n: k for k, n in enumerate(graph.nodes)}
    nodes = []
    for k, n in enumerate(graph.nodes):
        nodes.append({"op": n.op, "inputs": [index[i] for i in n.inputs],
                      "attrs": {a: _attr_to_json(v, axes, f"nodes[{k}].attrs.{a}") for a, v in n.attrs.items()},
                      "shape": list(n.shape), "dtype": n.dtype, "axes": [axes[a] for a in n.axes],
                      "batched": bool(n.batched), "name": n.name, "where": _where(n.where)})
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise SpecError("axes", f"two loop axes of {graph.name!r} share a name ({names}); give each a new name")
    init_json, arrays = {}, {}
    for name, spec in graph.param_inits.items():
        init_json[name], extra = _init_to_json(name, spec)
        arrays.update(extra)
    spec = {"version": SPEC_VERSION, "name": graph.name, "axes": names, "nodes": nodes,
            "inputs": {k: index[v] for k, v in graph.inputs.items()},
            "params": {k: index[v] for k, v in graph.params.items()}, "param_inits": init_json,
            "values": {k: index[v] for k, v in graph.values.items()}, "signals": list(graph.signals),
            "outputs": {k: index[v] for k, v in graph.outputs.items()},
            "loss": None if graph.loss is None else index[graph.loss],
            "lengths": [[axes[a], index[v]] for a, v in graph.lengths.items()],
            "inits": {k: index[v] for k, v in graph.inits.items()}}
    return spec, arrays


# ---------------------------------------------------------------------------------------------- reading
def _need(value, types, field: str, what: str):
    """``value`` if it is one of ``types`` (bools are not ints here), else a :class:`SpecError`."""
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise SpecError(field, f"expected {what}, got {type(value).__name__} {_short(value)}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _ident(value, field: str, what: str) -> str:
    _need(value, (str,), field, f"a {what} name")
    try:
        return check_name(value, what)
    except ValueError:
        raise SpecError(field, f"{what} name {_short(value)} is not a valid identifier") from None


def _node_name(value, field: str):
    """A node's name: None, an identifier, or a reference label such as ``h[t-1]``."""
    if value is None:
        return None
    _need(value, (str,), field, "a node name or null")
    m = _REF_LABEL.match(value)
    for part in m.groups() if m else (value,):
        _ident(part, field, "node")
    return value


def _index(value, bound: int, field: str) -> int:
    _need(value, (int,), field, "an integer index")
    if not 0 <= value < bound:
        raise SpecError(field, f"index {value} is out of range 0..{bound - 1}")
    return value


def _attr_from_json(value, axes: list, field: str):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return tuple(_attr_from_json(v, axes, f"{field}[{k}]") for k, v in enumerate(value))
    if isinstance(value, dict) and set(value) == {"axis"}:
        return axes[_index(value["axis"], len(axes), f"{field}.axis")]
    raise SpecError(field, f"expected a JSON number, string, bool, null, list or {{\"axis\": k}}, got "
                           f"{_short(value)}")


# Attrs that no shape or axes rule reads, so rebuilding a node would not notice a wrong type: checked here.
_NUMBER, _INT, _STR = (int, float), (int,), (str,)
_ATTR_TYPES = {"offset": _INT, "eps": _NUMBER, "mode": _STR, "k1": _INT, "k2": _INT, "shift": _INT, "src": _INT,
               "dst": _INT, "batched": (bool,), "dtype": _STR, ("ref", "value"): _STR, ("const", "value"): _NUMBER}


def _check_attr_type(op: str, attr: str, value, field: str) -> None:
    types = _ATTR_TYPES.get((op, attr)) or _ATTR_TYPES.get(attr)
    if types is not None:
        _need(value, types, field, " or ".join(t.__name__ for t in types))
    if attr == "shape" and op in ("input", "param", "lengths", "ref"):
        _shape(list(value) if isinstance(value, tuple) else value, field)


_NODE_KEYS = {"op", "inputs", "attrs", "shape", "dtype", "axes", "batched", "name", "where"}


def _shape(value, field: str) -> tuple:
    _need(value, (list,), field, "a list of positive integers")
    for k, s in enumerate(value):
        if _need(s, (int,), f"{field}[{k}]", "a positive integer") <= 0:
            raise SpecError(f"{field}[{k}]", f"expected a positive integer, got {s}")
    return tuple(value)


def _dtype(value, field: str) -> str:
    if value not in ("float", "int"):
        raise SpecError(field, f"expected 'float' or 'int', got {_short(value)}")
    return value


def _read_node(rec, k: int, built: list, axes: list) -> Node:
    field = f"nodes[{k}]"
    _need(rec, (dict,), field, "a JSON object")
    if set(rec) != _NODE_KEYS:
        raise SpecError(field, f"expected the fields {sorted(_NODE_KEYS)}, got {sorted(rec)}")
    op = _need(rec["op"], (str,), f"{field}.op", "an op name")
    if op not in OPS:
        raise SpecError(f"{field}.op", f"unknown op {_short(op)}: this rnnc does not register it")
    inputs = [built[_index(i, k, f"{field}.inputs[{j}]")] for j, i in
              enumerate(_need(rec["inputs"], (list,), f"{field}.inputs", "a list of earlier node indices"))]
    attrs = {}
    for a, v in _need(rec["attrs"], (dict,), f"{field}.attrs", "a JSON object").items():
        if not a.isidentifier() or a in ("name", "where"):
            raise SpecError(f"{field}.attrs", f"bad attribute name {_short(a)}")
        attrs[a] = _attr_from_json(v, axes, f"{field}.attrs.{a}")
        _check_attr_type(op, a, attrs[a], f"{field}.attrs.{a}")
    where = _need(rec["where"], (str,), f"{field}.where", "a source location string")
    if len(where) > _MAX_WHERE or not where.isprintable():
        raise SpecError(f"{field}.where", "expected a short printable source location")
    name = _node_name(rec["name"], f"{field}.name")
    try:
        node = make(op, inputs, name=name, where=where, **attrs)
    except Exception as e:  # the op's own rules refuse the recorded attrs or inputs: the file is at fault
        raise SpecError(field, f"op {op!r} refuses its recorded inputs or attrs: {type(e).__name__}: {e}") from None
    expect = {"shape": _shape(rec["shape"], f"{field}.shape"),
              "dtype": _dtype(rec["dtype"], f"{field}.dtype"),
              "axes": tuple(axes[_index(i, len(axes), f"{field}.axes")] for i in
                            _need(rec["axes"], (list,), f"{field}.axes", "a list of axis indices")),
              "batched": _need(rec["batched"], (bool,), f"{field}.batched", "true or false")}
    for key, want in expect.items():
        if getattr(node, key) != want:
            raise SpecError(f"{field}.{key}", f"op {op!r} gives {getattr(node, key)!r} from its inputs and "
                                              f"attrs, the spec records {want!r}")
    return node


def _table(spec: dict, key: str, nodes: list, what: str) -> dict:
    out = {}
    for name, k in _need(spec[key], (dict,), key, "a JSON object of name -> node index").items():
        out[_ident(name, f"{key}.{name}", what)] = nodes[_index(k, len(nodes), f"{key}.{name}")]
    return out


def _check_leaves(table: dict, key: str, ops: tuple) -> None:
    for name, node in table.items():
        if node.op not in ops or node.name != name:
            raise SpecError(f"{key}.{name}", f"expected a {' or '.join(ops)} leaf named {name!r}, got "
                                             f"{node.op} {node.name!r}")


def _read_init(name: str, rec, arrays: dict, shape: tuple):
    field = f"param_inits.{name}"
    _need(rec, (dict,), field, "a JSON object")
    if set(rec) == {"array"}:
        key = rec["array"]
        if key != f"init/{name}" or key not in arrays or arrays[key].shape != shape:
            raise SpecError(field, f"expects array 'init/{name}' of shape {shape} in the file")
        return arrays[key]
    if set(rec) == {"custom"}:                # a user's initializer class: the saved values stand in for it
        if f"param/{name}" not in arrays:
            raise SpecError(field, f"a custom initializer needs the saved array 'param/{name}'")
        return np.asarray(arrays[f"param/{name}"])
    cls = INITIALIZERS.get(rec.get("init"))
    if cls is None:
        raise SpecError(f"{field}.init", f"unknown initializer {_short(rec.get('init'))}; expected one of "
                                         f"{sorted(INITIALIZERS)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    args = {k: v for k, v in rec.items() if k != "init"}
    if set(args) - fields:
        raise SpecError(field, f"{cls.__name__} has no field(s) {sorted(set(args) - fields)}")
    return cls(**{k: float(_need(v, (int, float), f"{field}.{k}", "a number")) for k, v in args.items()})


def spec_to_graph(spec, arrays: dict) -> Graph:
    """Rebuild the graph described by ``spec`` (see the module docstring); ``arrays`` holds ``param/<name>``
    and ``init/<name>``. Raises :class:`SpecError` naming the first field that is wrong."""
    _need(spec, (dict,), "spec", "a JSON object")
    keys = {"version", "name", "axes", "nodes", "inputs", "params", "param_inits", "values", "signals",
            "outputs", "loss", "lengths", "inits"}
    if set(spec) != keys:
        raise SpecError("spec", f"expected the fields {sorted(keys)}, got {sorted(spec)}")
    name = _ident(spec["name"], "name", "model")
    axis_names = [_ident(a, f"axes[{k}]", "axis") for k, a in
                  enumerate(_need(spec["axes"], (list,), "axes", "a list of axis names"))]
    if len(set(axis_names)) != len(axis_names):
        raise SpecError("axes", f"axis names repeat: {axis_names}")
    axes = [Axis(a) for a in axis_names]
    nodes: list = []
    for k, rec in enumerate(_need(spec["nodes"], (list,), "nodes", "a list of nodes")):
        nodes.append(_read_node(rec, k, nodes, axes))
    inputs, params = _table(spec, "inputs", nodes, "input"), _table(spec, "params", nodes, "param")
    _check_leaves(inputs, "inputs", ("input", "lengths"))
    _check_leaves(params, "params", ("param",))
    values, outputs = _table(spec, "values", nodes, "value"), _table(spec, "outputs", nodes, "output")
    inits = _table(spec, "inits", nodes, "signal")
    signals = tuple(_ident(s, f"signals[{k}]", "signal") for k, s in
                    enumerate(_need(spec["signals"], (list,), "signals", "a list of signal names")))
    for s in signals + tuple(inits):
        if s not in values:
            raise SpecError(f"signals.{s}", f"signal {s!r} has no entry in values")
    for k, n in enumerate(nodes):
        if n.op == "ref" and n.attr("value") not in values:
            raise SpecError(f"nodes[{k}].attrs.value", f"reads {n.attr('value')!r}, which values does not define")
    loss = None if spec["loss"] is None else nodes[_index(spec["loss"], len(nodes), "loss")]
    if loss is not None and (loss.shape or loss.axes or loss.batched):
        raise SpecError("loss", f"expected a scalar, got {loss.op} of shape {loss.shape}")
    lengths = {}
    for k, pair in enumerate(_need(spec["lengths"], (list,), "lengths", "a list of [axis, node] pairs")):
        if not isinstance(pair, list) or len(pair) != 2:
            raise SpecError(f"lengths[{k}]", f"expected an [axis index, node index] pair, got {_short(pair)}")
        node = nodes[_index(pair[1], len(nodes), f"lengths[{k}][1]")]
        if node.op != "lengths" or inputs.get(node.name) is not node:
            raise SpecError(f"lengths[{k}][1]", f"expected a lengths input, got {node.op} {node.name!r}")
        lengths[axes[_index(pair[0], len(axes), f"lengths[{k}][0]")]] = node
    init_recs = _need(spec["param_inits"], (dict,), "param_inits", "a JSON object")
    if set(init_recs) != set(params):
        raise SpecError("param_inits", f"expected one entry per param {sorted(params)}, got {sorted(init_recs)}")
    param_inits = {p: _read_init(p, init_recs[p], arrays, params[p].shape) for p in params}
    return Graph(name, inputs, params, param_inits, values, signals, outputs, loss, lengths=lengths, inits=inits)
