"""Checking the arrays handed to a model and deriving axis sizes and the batch size from them."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from rnnc.errors import InputError
from rnnc.interpret.boundary import as_int64, check_binding, check_sizes
from rnnc.ir.graph import Graph, static_sizes


@dataclass
class Binding:
    """Arrays for every leaf, by node, plus the sizes they imply."""

    arrays: dict
    sizes: dict
    batch: int | None
    dtype: np.dtype


def _layout(node, sizes_names=None) -> str:
    lead = [a.name.upper() for a in node.axes] + (["B"] if node.batched else [])
    return "(" + ", ".join(lead + [str(s) for s in node.shape]) + ")"


@dataclass(frozen=True)
class GraphFacts:
    """What :func:`bind` reads off a graph alone, made once per graph (:func:`graph_facts`): a :class:`Graph`
    is frozen and its nodes are fixed when it is made, so none of this changes between calls. The arrays
    themselves are checked on every call."""

    names: frozenset    # every input name
    used: frozenset     # names of the input / lengths leaves the graph reads
    static: dict        # axis name -> size the graph fixes (:func:`static_sizes`); copied before use
    axes: tuple         # ``graph.axes()``
    inputs: tuple       # (name, leaf, number of loop axes) per input, in ``graph.inputs`` order
    params: tuple       # (name, leaf) per param, in ``graph.params`` order


_FACTS: weakref.WeakKeyDictionary[Graph, GraphFacts] = weakref.WeakKeyDictionary()


def graph_facts(graph: Graph) -> GraphFacts:
    """The :class:`GraphFacts` of ``graph``, made on its first call and kept while the graph lives."""
    facts = _FACTS.get(graph)
    if facts is None:
        facts = _FACTS[graph] = GraphFacts(
            frozenset(graph.inputs), frozenset(n.name for n in graph.nodes if n.op in ("input", "lengths")),
            {a.name: s for a, s in static_sizes(graph).items()}, tuple(graph.axes()),
            tuple((name, node, len(node.axes)) for name, node in graph.inputs.items()),
            tuple(graph.params.items()))
    return facts


def resolve_dtype(params: dict, dtype) -> np.dtype:
    if dtype is not None:
        dt = np.dtype(dtype)
    else:
        kinds = {np.asarray(v).dtype for v in params.values() if np.asarray(v).dtype.kind == "f"}
        dt = np.dtype("float64") if np.dtype("float64") in kinds else np.dtype("float32")
    if dt not in (np.dtype("float32"), np.dtype("float64")):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def bind(graph: Graph, inputs: dict, params: dict, dtype=None, sizes=None, batch=None,
         optional=(), check_finite: bool | str = False) -> Binding:
    """Check ``inputs`` and ``params`` against ``graph``; raise ``ValueError`` naming what is wrong.

    Inputs named in ``optional`` (targets only the loss needs) may be left out. Sizes, index ranges and
    (with ``check_finite``; ``"params"``: in the params only) NaN / Inf are checked by
    :mod:`rnnc.interpret.boundary`, raising ``InputError``. What depends on the graph alone is read once per
    graph (:func:`graph_facts`); every array is checked on every call.
    """
    dt = resolve_dtype(params, dtype)
    sizes, batch = check_sizes(sizes, batch)
    facts = graph_facts(graph)
    inputs = dict(inputs)
    unknown = set(inputs) - facts.names
    if unknown:
        raise ValueError(f"model {graph.name!r} has no input named {', '.join(map(repr, sorted(unknown)))}; "
                         f"its inputs are {sorted(graph.inputs)}")
    missing = sorted(n for n in facts.used if n not in inputs and n not in optional)
    if missing:
        raise ValueError(f"model {graph.name!r} needs input {', '.join(map(repr, missing))} "
                         f"(expected layouts: " + ", ".join(
                             f"{n} {_layout(graph.inputs[n])}" for n in missing) + ")")
    axis_sizes = dict(facts.static)
    for name, size in sizes.items():
        if axis_sizes.setdefault(name, size) != size:
            raise ValueError(f"sizes= gives axis {name!r} size {size}, but the model fixes it at {axis_sizes[name]}")
    arrays = {}
    b = _bind_inputs(facts, inputs, dt, axis_sizes, batch, arrays)
    sizes_by_axis = _axis_sizes(facts, inputs, axis_sizes)
    for name, node in facts.params:
        if name not in params:
            raise ValueError(f"param {name!r} is missing (shape {node.shape}); m.init_params() makes them all")
        arr = np.asarray(params[name])
        if arr.shape != node.shape:
            raise ValueError(f"param {name!r}: expected shape {node.shape}, got {arr.shape}")
        if arr.dtype.kind != "f":
            raise ValueError(f"param {name!r}: expected floats, got dtype {arr.dtype}")
        arrays[node] = arr if arr.dtype == dt else arr.astype(dt)
    binding = Binding(arrays, sizes_by_axis, b if b is not None else 1, dt)
    check_binding(graph, binding, check_finite)
    return binding


def _bind_inputs(facts: GraphFacts, inputs: dict, dt: np.dtype, axis_sizes: dict, b: int | None,
                 arrays: dict) -> int | None:
    """Check each given input's layout and dtype, record the axis sizes it implies in ``axis_sizes`` and its
    array (as ``dt`` or int64) in ``arrays``; returns the batch size (``b`` when given)."""
    for name, node, lead in facts.inputs:
        if name not in inputs:
            continue
        arr = np.asarray(inputs[name])
        if arr.ndim != lead + 1 + len(node.shape) or arr.shape[lead + 1:] != node.shape:
            raise ValueError(f"input {name!r}: expected an array of layout {_layout(node)}, got shape "
                             f"{arr.shape}")
        if node.dtype == "float":
            if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
                raise ValueError(f"input {name!r}: expected real numbers, got dtype {arr.dtype}")
            arr = arr if arr.dtype == dt else arr.astype(dt)
        elif arr.dtype.kind not in "iu":
            raise InputError(f"input {name!r}: expected integers (dtype int), got dtype {arr.dtype}")
        else:
            arr = as_int64(name, arr)
        for axis, size in zip(node.axes, arr.shape):
            prev = axis_sizes.setdefault(axis.name, size)
            if prev != size:
                raise ValueError(f"input {name!r}: axis {axis.name!r} has size {size}, but another input "
                                 f"or sizes= gives {prev}")
        nb = arr.shape[lead]
        if nb == 0:
            raise InputError(f"input {name!r}: batch size 0; a call needs at least one sample")
        if b is None:
            b = nb
        elif nb != b:
            raise ValueError(f"input {name!r}: batch size {nb} differs from {b} given by the other inputs")
        arrays[node] = arr
    return b


def _axis_sizes(facts: GraphFacts, inputs: dict, axis_sizes: dict) -> dict:
    """``{Axis: size}`` for every axis of the graph; an axis whose size nothing gave, or a size 0, is refused."""
    out = {}
    for axis in facts.axes:
        if axis.name not in axis_sizes:
            raise ValueError(f"the size of axis {axis.name!r} is unknown: no input varies along it; "
                             f"pass sizes={{{axis.name!r}: N}}")
        if axis_sizes[axis.name] == 0:
            given = next((f"input {n!r}" for n, node, _ in facts.inputs if n in inputs and axis in node.axes),
                         "sizes=")
            raise InputError(f"axis {axis.name!r} has size 0 ({given}); a sequence needs at least one step")
        out[axis] = axis_sizes[axis.name]
    return out
