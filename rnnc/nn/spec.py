"""Rebuilding layers from a saved JSON spec, checking every field on the way.

A spec is untrusted input (it comes from a file): only registered layer types and known initialisers are
rebuilt, each field must have its declared type (``units`` an int >= 1, ``activation`` a known name, ...), and
nesting is bounded. A bad spec raises :class:`SpecError` naming the field by its path in the spec, e.g.
``layers[2].units``; :func:`rnnc.train.checkpoint.load_model` adds the file's name.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from rnnc.dsl import init as inits
from rnnc.nn.base import ACTIVATIONS, INITS, LAYERS

MAX_DEPTH = 32
"""How deeply layers (``Sequential`` in ``Sequential``, a cell in a layer) and lists may nest in a spec."""

_ACTIVATION_FIELDS = ("activation", "output_activation")
_POSITIVE_FLOATS = ("eps", "divisor")
_UNIT_FLOATS = {"p": (0.0, 1.0, False), "momentum": (0.0, 1.0, True)}   # (low, high, high included)
_WINDOW_FIELDS = ("kernel", "stride", "padding", "dilation")


class SpecError(ValueError):
    """A saved model spec is malformed; the message names the field (``layers[2].units``) and what it must be."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def from_spec(spec: dict, where: str = "layer", depth: int = 0):
    """Rebuild a layer (or cell) from its JSON spec ``{"layer": type name, field: value, ...}``.

    Only types registered with :func:`rnnc.nn.register_layer`, plain values and known initialisers are rebuilt;
    ``where`` is the spec path used in error messages.
    """
    if depth > MAX_DEPTH:
        raise SpecError(f"{where}: layers nest deeper than {MAX_DEPTH} levels")
    kind = spec.get("layer") if isinstance(spec, dict) else spec
    if not isinstance(spec, dict) or not isinstance(kind, str) or kind not in LAYERS:
        raise SpecError(f"{where}: unknown layer type {kind!r}; expected one of {sorted(LAYERS)}")
    cls = LAYERS[kind]
    spec = _check_weight_names(cls, spec, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in spec if k != "layer" and k not in fields)
    if unknown:
        raise SpecError(f"{where}: {kind} has no fields {unknown}; its fields are {sorted(fields)}")
    missing = sorted(k for k, f in fields.items() if _required(f) and k not in spec)
    if missing:
        raise SpecError(f"{where}: {kind} needs the fields {missing}")
    args = {}
    for key, value in spec.items():
        if key != "layer":
            args[key] = _from_json(value, f"{where}.{key}", depth + 1)
            _check_field(fields[key], args[key], f"{where}.{key}")
    return cls(**args)


def _check_weight_names(cls: type, spec: dict, where: str) -> dict:
    """A cell's spec without its ``weight_names`` mark. Refused for rnnc's own cells (and ``SpatialRNN``,
    which makes one) when saved before they took the lectures' names (``U`` input -> hidden, ``W`` hidden ->
    hidden): their arrays ``..._W`` and ``..._U`` meant the other way round and would load into the wrong
    matrices, silently where the two have the same shape."""
    from rnnc.nn.cells import RENAMED_LAYERS, WEIGHT_NAMES, Cell

    if not issubclass(cls, Cell) and cls.__name__ not in RENAMED_LAYERS:
        return spec
    mark = spec.get("weight_names")
    if cls.__name__ in RENAMED_LAYERS and mark != WEIGHT_NAMES:
        raise SpecError(f"{where}: saved by an older rnnc whose {cls.__name__} named its input weights W and its "
                        "recurrent weights U; they are now U (input -> hidden) and W (hidden -> hidden), as in the "
                        "lectures, so the arrays would load into the wrong matrices: retrain, or swap <layer>_W and "
                        f'<layer>_U and add "weight_names": {WEIGHT_NAMES} to this spec')
    return {k: v for k, v in spec.items() if k != "weight_names"}


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _from_json(v: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise SpecError(f"{where}: values nest deeper than {MAX_DEPTH} levels")
    if isinstance(v, dict) and "layer" in v:
        return from_spec(v, where, depth)
    if isinstance(v, dict) and "init" in v:
        return _initializer(v, where)
    if isinstance(v, list):
        return tuple(_from_json(a, f"{where}[{k}]", depth + 1) for k, a in enumerate(v))
    if v is None or isinstance(v, (bool, int, str)) or isinstance(v, float) and math.isfinite(v):
        return v
    raise SpecError(f"{where}: unexpected value {v!r} ({type(v).__name__})")


def _initializer(v: dict, where: str) -> inits.Initializer:
    kind = v["init"]
    if not isinstance(kind, str) or kind not in INITS:
        raise SpecError(f"{where}: unknown initializer {kind!r}; expected one of {sorted(INITS)}")
    cls = INITS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in v.items():
        if key == "init":
            continue
        if key not in names:
            raise SpecError(f"{where}.{key}: {kind} has no field {key!r}; its fields are {sorted(names)}")
        if not _is_number(value):
            raise SpecError(f"{where}.{key}: must be a finite number, got {value!r}")
    return cls(**{k: float(a) for k, a in v.items() if k != "init"})


def _check_field(f: dataclasses.Field, v: Any, where: str) -> None:
    """Check one rebuilt field against its declared type (and, for a few names, its range)."""
    kind = str(f.type).replace(" ", "")
    name = f.name
    if name in _ACTIVATION_FIELDS or name == "name" and kind == "str":
        if not isinstance(v, (str, type(None))) or v not in ACTIVATIONS:
            _bad(where, f"null or one of {sorted(k for k in ACTIVATIONS if k)}", v)
    elif kind == "int":
        low = 1 if _required(f) else 0
        if not _is_int(v) or v < low:
            _bad(where, f"an int >= {low}", v)
    elif kind == "float":
        _check_float(name, v, where)
    elif kind == "bool":
        if not isinstance(v, bool):
            _bad(where, "true or false", v)
    elif kind in ("str", "str|None"):
        if not (isinstance(v, str) or v is None and kind == "str|None"):
            _bad(where, "a string" + (" or null" if kind == "str|None" else ""), v)
    elif kind == "tuple":
        _check_tuple(name, v, where)
    else:
        _check_object(name, v, where)


def _check_float(name: str, v: Any, where: str) -> None:
    if not _is_number(v):
        _bad(where, "a finite number", v)
    if name in _POSITIVE_FLOATS and v <= 0:
        _bad(where, "a number > 0", v)
    if name in _UNIT_FLOATS:
        low, high, closed = _UNIT_FLOATS[name]
        if not (low <= v <= high if closed else low <= v < high):
            _bad(where, f"a number in [{low}, {high}{']' if closed else ')'}", v)


def _check_tuple(name: str, v: Any, where: str) -> None:
    from rnnc.nn.base import Layer

    if not isinstance(v, tuple):
        _bad(where, "a list", v)
    if name == "layers":
        for k, item in enumerate(v):
            if not isinstance(item, Layer):
                _bad(f"{where}[{k}]", "a layer spec", item)
    elif not all(_is_int(item) and item >= 1 for item in v):
        _bad(where, "a list of ints >= 1", v)


def _check_object(name: str, v: Any, where: str) -> None:
    """Fields declared ``object``: initialisers, cells, axes and pooling / convolution windows."""
    from rnnc.nn.cells import Cell

    if name in ("init", "recurrent_init"):
        ok = v is None or isinstance(v, inits.Initializer) or _is_number(v) or isinstance(v, str) and v in inits.NAMED
        expected = f"null, a number, an initializer or one of {sorted(inits.NAMED)}"
    elif name == "cell":
        ok, expected = isinstance(v, Cell) or v is None, "a cell spec"
    elif name == "axis":
        ok, expected = v is None or isinstance(v, str) and v.isidentifier(), "null or an axis name"
    elif name in _WINDOW_FIELDS:
        ok = (v is None or v == "all" or _is_int(v) and v >= 0
              or isinstance(v, tuple) and len(v) == 2 and all(_is_int(k) and k >= 0 for k in v))
        expected = "an int >= 0 or a pair of them"
    else:
        ok, expected = True, ""
    if not ok:
        _bad(where, expected, v)


def _bad(where: str, expected: str, v: Any) -> None:
    raise SpecError(f"{where}: expected {expected}, got {v!r} ({type(v).__name__})")
