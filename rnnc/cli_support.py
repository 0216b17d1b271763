"""What the ``rnnc`` command needs besides its subcommands: loading the user's MODEL.py (see :mod:`rnnc.cli`
for how the model is found), parsing sizes, random inputs, the finite-difference and model tables, and
sorting an exception into "the user's file at line N" or an rnnc bug."""
from __future__ import annotations

import os
import runpy
import sys
import traceback

import numpy as np

import rnnc as rc
from rnnc.errors import RnncError


class UserError(Exception):
    """A mistake in the command line or in the user's MODEL.py; reported as one line, exit code 2."""


def load_model(spec: str):
    """Run ``spec`` (``path.py`` or ``path.py:NAME``) and return the Model it defines (see module docstring)."""
    path, _, name = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    if not os.path.isfile(path):
        raise UserError(f"model file {path!r} does not exist")
    if not path.endswith(".py"):
        raise UserError(f"model file {path!r} must be a Python file ending in .py")
    here = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, here)
    try:
        namespace = runpy.run_path(path, run_name="__rnnc_model__")
    finally:
        if sys.path and sys.path[0] == here:
            sys.path.pop(0)
    return pick_model(namespace, path, name)


def pick_model(namespace: dict, path: str, name: str = ""):
    """The Model a MODEL.py's top-level ``namespace`` defines: ``name`` if given, else the variable ``model``,
    else ``build()``, else the only Model among its variables (a UserError naming ``path`` otherwise)."""
    if name:
        if name not in namespace:
            raise UserError(f"{path} defines no name {name!r}")
        return _as_model(namespace[name], f"{path}:{name}")
    if "model" in namespace:
        return _as_model(namespace["model"], f"{path}: variable 'model'")
    if callable(namespace.get("build")):
        return _as_model(namespace["build"], f"{path}: build()")
    found = [k for k, v in namespace.items() if isinstance(v, rc.Model) and not k.startswith("_")]
    if len(found) == 1:
        return namespace[found[0]]
    if not found:
        raise UserError(f"{path} defines no Model: set a module-level variable 'model', define build() "
                        f"returning one, or create exactly one rc.Model at module level")
    raise UserError(f"{path} defines several Models ({', '.join(found)}); name the one to use as "
                    f"{path}:NAME or assign it to 'model'")


def _as_model(obj, what: str):
    if callable(obj) and not isinstance(obj, rc.Model):
        obj = obj()
    if not isinstance(obj, rc.Model):
        raise UserError(f"{what} should be an rnnc Model, got {type(obj).__name__}")
    return obj


def parse_sizes(items: list[str] | None) -> dict[str, int]:
    """``["t=4"]`` or ``["i=3,j=2"]`` -> ``{"t": 4}`` / ``{"i": 3, "j": 2}``; a bare ``4`` means ``t=4``."""
    sizes: dict[str, int] = {}
    for item in items or []:
        for part in filter(None, item.split(",")):
            axis, eq, size = part.partition("=")
            if not eq and axis.strip().isdigit():
                axis, eq, size = "t", "=", axis
            if not eq or not axis.strip().isidentifier() or not size.strip().isdigit() or int(size) < 1:
                raise UserError(f"--unroll expects AXIS=SIZE with a positive size (e.g. t=4), got {part!r}")
            sizes[axis.strip()] = int(size)
    return sizes


def _class_counts(graph) -> dict[str, int]:
    """For integer inputs used as class indices, the number of classes (so random targets are valid)."""
    counts: dict[str, int] = {}
    for n in graph.nodes:
        target, classes = None, None
        if n.op == "softmax_cross_entropy":
            target, classes = n.inputs[1], n.inputs[0].shape[-1]
        elif n.op == "one_hot":
            target, classes = n.inputs[0], n.attr("classes")
        if target is not None and target.op in ("ref", "input"):
            name = target.attr("value") if target.op == "ref" else target.name
            counts[name] = min(classes, counts.get(name, classes))
    return counts


def random_inputs(model, sizes: dict[str, int], batch: int, seed: int) -> dict:
    """Random arrays for every input of ``model``: normal floats, valid class indices, lengths in [1, size]."""
    rng = np.random.default_rng(seed)
    graph = model.graph
    classes = _class_counts(graph)
    axis_size = {a.name: sizes.get(a.name, 4) for a in graph.axes()}
    lengths_axis = {node.name: axis.name for axis, node in graph.lengths.items()}
    out = {}
    for name, node in graph.inputs.items():
        shape = (*(axis_size[a.name] for a in node.axes), batch, *node.shape)
        if name in lengths_axis:
            out[name] = rng.integers(1, axis_size[lengths_axis[name]] + 1, size=batch)
        elif node.dtype == "int":
            out[name] = rng.integers(0, classes.get(name, 2), size=shape)
        else:
            out[name] = rng.normal(size=shape)
    return out


def finite_difference_table(model, sizes, batch, entries, seed) -> list[tuple[str, tuple, float]]:
    """``(param, shape, max relative error)`` of ``rc.grad`` against central differences, in float64."""
    inputs = random_inputs(model, sizes, batch, seed)
    params = model.init_params(seed=seed, dtype="float64")
    axis_sizes = {a.name: sizes.get(a.name, 4) for a in model.graph.axes()}
    run = {"sizes": axis_sizes, "batch": batch}
    symbolic = rc.interpret(rc.grad(model), inputs, params, **run).grads
    rng = np.random.default_rng(seed + 1)
    rows = []
    for name, value in params.items():
        picks = rng.choice(value.size, size=min(entries, value.size), replace=False)
        err = 0.0
        for flat in picks:
            idx = np.unravel_index(flat, value.shape)
            eps = 1e-6 * max(1.0, abs(value[idx]))
            losses = []
            for sign in (1, -1):
                shifted = dict(params, **{name: value.copy()})
                shifted[name][idx] += sign * eps
                losses.append(rc.interpret(model, inputs, shifted, **run).loss)
            numeric = (losses[0] - losses[1]) / (2 * eps)
            exact = float(symbolic[name][idx])
            err = max(err, abs(numeric - exact) / max(1e-3, abs(numeric) + abs(exact)))
        rows.append((name, value.shape, err))
    return rows


def load_namespace(path: str) -> dict:
    """Run ``path`` like a MODEL.py (``__name__ == "__rnnc_model__"``) and return its top-level names."""
    if not os.path.isfile(path) or not path.endswith(".py"):
        raise UserError(f"{path!r} is not an existing Python file")
    here = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, here)
    try:
        return runpy.run_path(path, run_name="__rnnc_model__")
    finally:
        if sys.path and sys.path[0] == here:
            sys.path.pop(0)


def model_table(model, sizes: dict, batch: int) -> str:
    """Params, inputs and signals of ``model`` with shapes and sizes, and the float32 memory they take."""
    graph = model.graph
    axis_size = {a.name: sizes.get(a.name, 4) for a in graph.axes()}
    lines = [f"model {model.name!r}, axes {axis_size or '{}'}, batch {batch}",
             f"{'kind':<8} {'name':<16} {'shape':<14} {'axes':<8} {'elements':>12}"]
    total = {"param": 0, "input": 0, "signal": 0}
    groups = (("param", graph.params), ("input", graph.inputs),
              ("signal", {name: graph.values[name] for name in graph.signals}))
    for kind, table in groups:
        for name, node in table.items():
            count = int(np.prod(node.shape, dtype=np.int64))
            if kind != "param":
                count *= batch * int(np.prod([axis_size[a.name] for a in node.axes], dtype=np.int64))
            total[kind] += count
            axes = ",".join(a.name for a in node.axes) or "-"
            lines.append(f"{kind:<8} {name:<16} {str(node.shape):<14} {axes:<8} {count:>12,}")
    lines.append(f"parameters {total['param']:,} ({4 * total['param'] / 2**20:.2f} MiB float32); inputs "
                 f"{4 * total['input'] / 2**20:.2f} MiB; signals kept for BPTT {4 * total['signal'] / 2**20:.2f} MiB")
    return "\n".join(lines)


def user_error_line(exc: BaseException, user_file: str) -> str | None:
    """One line for an exception caused by the user's model file, or None for an rnnc bug.

    rnnc's own errors already quote the user's ``file:line``; any other exception raised while the user's
    file ran is located at the innermost frame of the traceback inside that file.
    """
    kind = type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: error: SyntaxError: {exc.msg}"
    where = None
    if user_file:
        target = os.path.abspath(user_file)
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            if os.path.abspath(frame.f_code.co_filename) == target:
                where = f"{frame.f_code.co_filename}:{lineno}"
    message = str(exc).strip() or kind
    if isinstance(exc, RnncError):
        return f"rnnc: error: {kind}: {message}" if where is None or where in message else \
            f"{where}: error: {kind}: {message}"
    if where is not None:
        return f"{where}: error: {kind}: {message}"
    if isinstance(exc, (ValueError, TypeError, KeyError)) and _raised_by_rnnc_api(exc):
        return f"rnnc: error: {kind}: {message}"
    return None


def _raised_by_rnnc_api(exc: BaseException) -> bool:
    """Whether ``exc`` comes from rnnc's input checks (a clear message), judged by its raising module."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    if not frames:
        return False
    mod = frames[-1][0].f_globals.get("__name__", "")
    return mod.startswith(("rnnc.interpret.bind", "rnnc.schedule.unroll", "rnnc.dsl", "rnnc.viz"))
