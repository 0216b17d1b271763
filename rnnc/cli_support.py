"""What the ``rnnc`` command needs besides its subcommands: argument types that refuse bad values, loading
the user's MODEL.py (see :mod:`rnnc.cli` for how the model is found), random inputs, the finite-difference and
model tables, and sorting an exception into one line ``FILE:LINE: error: Kind: message`` or an rnnc bug."""
from __future__ import annotations

import argparse
import inspect
import os
import re
import runpy
import sys
import traceback

import numpy as np

import rnnc as rc
from rnnc.errors import RnncError
from rnnc.ir.graph import static_sizes


class UserError(Exception):
    """A mistake in the command line or in the user's files; reported as ``WHERE: error: message``, exit code 2.

    ``where`` is the user's ``file:line``, a file, or the option at fault (``--params``).
    """

    def __init__(self, message: str, where: str | None = None):
        super().__init__(message)
        self.where = where


# ---------------------------------------------------------------------------------------------- argument types
# Each is an argparse ``type=``: it returns the parsed value or raises ArgumentTypeError, which argparse reports
# as ``--option: error: message`` before any subcommand runs.
def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, steps, epochs, repeats)."""
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (seeds)."""
    return _int_at_least(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite float > 0 (tolerances)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def axis_sizes(text: str) -> dict[str, int]:
    """``"t=4"`` -> ``{"t": 4}``, ``"i=3,j=2"`` -> ``{"i": 3, "j": 2}``; a bare ``"4"`` means ``t=4``."""
    sizes: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        axis, eq, size = (part.partition("=") if "=" in part else ("t", "=", part))
        axis, size = axis.strip(), size.strip()
        if not axis.isidentifier() or not size.isdigit() or int(size) < 1:
            raise argparse.ArgumentTypeError(f"expected AXIS=SIZE with a positive size (e.g. t=4), got {part!r}")
        sizes[axis] = int(size)
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected AXIS=SIZE (e.g. t=4), got {text!r}")
    return sizes


def merge_sizes(items: list[dict[str, int]] | None) -> dict[str, int]:
    """The sizes of a repeatable ``--size``/``--unroll`` option, later ones winning."""
    return {axis: size for item in items or [] for axis, size in item.items()}


def input_shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` -> ``(3, 32, 32)``, every entry >= 1."""
    try:
        return tuple(positive_int(v) for v in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 3,32,32, got {text!r}") from None


def existing_file(text: str) -> str:
    """A path that names an existing file."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text!r} does not exist" if not os.path.exists(text)
                                         else f"{text!r} is not a file")
    return text


class OutputPath(str):
    """A path the command will write; :func:`make_output_folders` creates its folder before the command runs."""


def output_file(*extensions: str):
    """An argparse type for an output path, optionally restricted to ``extensions`` (``".svg"``, ...)."""
    def parse(text: str) -> OutputPath:
        if extensions and os.path.splitext(text)[1].lower() not in extensions:
            raise argparse.ArgumentTypeError(f"{text!r}: the output must end in {', '.join(extensions)}")
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text!r} is a folder; name a file in it")
        return OutputPath(text)
    parse.__name__ = "output_file"
    return parse


def make_output_folders(args: argparse.Namespace) -> None:
    """Create the missing folders of every :class:`OutputPath` argument (``--save out/h.npz``)."""
    for value in vars(args).values():
        if isinstance(value, OutputPath):
            folder = os.path.dirname(os.path.abspath(value))
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create the folder {folder!r} for {value!r}: {e.strerror or e}",
                                where=value) from None


# ---------------------------------------------------------------------------------------------- the user's file
def split_spec(spec: str) -> tuple[str, str]:
    """``"path.py:NAME"`` -> ``("path.py", "NAME")``; a path that exists as given is never split."""
    if os.path.exists(spec):
        return spec, ""
    path, _, name = spec.partition(":")
    return path, name


def load_namespace(path: str) -> dict:
    """Run ``path`` like a MODEL.py (``__name__ == "__rnnc_model__"``) and return its top-level names."""
    if not os.path.isfile(path):
        raise UserError(f"file {path!r} does not exist", where=path)
    if not path.endswith(".py"):
        raise UserError(f"{path!r} must be a Python file ending in .py", where=path)
    here = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, here)
    try:
        return runpy.run_path(path, run_name="__rnnc_model__")
    finally:
        if sys.path and sys.path[0] == here:
            sys.path.pop(0)


def load_portable(path: str):
    """``(model, params)`` of a ``.rnnc`` file written by ``rc.save``; a refusal is a one-line UserError."""
    if not os.path.isfile(path):
        raise UserError(f"file {path!r} does not exist", where=path)
    try:
        return rc.load(path)
    except rc.io.ModelFileError as e:
        raise UserError(unquoted(str(e), path), where=path) from None


def unquoted(message: str, path: str) -> str:
    """``message`` without a leading ``path: `` (the error line names the file once)."""
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


def load_model(spec: str):
    """Run ``spec`` (``path.py`` or ``path.py:NAME``) and return the Model it defines (see :mod:`rnnc.cli`);
    a portable ``path.rnnc`` (written by ``rc.save``) is loaded, not run."""
    path, name = split_spec(spec)
    if path.endswith(".rnnc") and not name:
        return load_portable(path)[0]
    return pick_model(load_namespace(path), path, name)


def pick_model(namespace: dict, path: str, name: str = "", options: dict | None = None):
    """The Model a MODEL.py's top-level ``namespace`` defines: ``name`` if given, else the variable ``model``,
    else ``build()``, else the only Model among its variables (a UserError naming ``path`` otherwise).

    ``options`` (``{"sync_batchnorm": True}`` under ``rnnc train --sync-batchnorm``) are passed to a builder
    function whose signature has a parameter of that name (``def build(sync_batchnorm=False)``); others are
    called without. The model is checked (its stages scheduled) so that every command refuses an algebraic
    loop alike."""
    if name:
        if name not in namespace:
            raise UserError(f"the file defines no name {name!r}", where=path)
        model = _as_model(namespace[name], f"{name}", options)
    elif "model" in namespace:
        model = _as_model(namespace["model"], "variable 'model'")
    elif callable(namespace.get("build")):
        model = _as_model(namespace["build"], "build()", options)
    else:
        found = [k for k, v in namespace.items() if isinstance(v, rc.Model) and not k.startswith("_")]
        if not found:
            raise UserError("the file defines no Model: set a module-level variable 'model', define build() "
                            "returning one, or create exactly one rc.Model at module level", where=path)
        if len(found) > 1:
            raise UserError(f"the file defines several Models ({', '.join(found)}); name the one to use as "
                            f"{path}:NAME or assign it to 'model'", where=path)
        model = namespace[found[0]]
    rc.schedule(model)
    return model


def _as_model(obj, what: str, options: dict | None = None):
    if callable(obj) and not isinstance(obj, rc.Model):
        obj = call_user(obj, **accepted(obj, options or {}))
    if not isinstance(obj, rc.Model):
        raise UserError(f"{what} should be an rnnc Model, got {type(obj).__name__}")
    return obj


def accepted(fn, options: dict) -> dict:
    """The ``options`` whose names are parameters of ``fn`` (or all, for a ``**kwargs`` function)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


def call_user(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` for a function of the user's file, refusing a wrong signature at its ``def`` line
    (``def build(n)``) instead of a TypeError raised inside rnnc."""
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as e:
        name = getattr(fn, "__name__", "function")
        shown = [type(a).__name__ for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        raise UserError(f"TypeError: {name}() {e}; rnnc calls {name}({', '.join(shown)})",
                        where=def_line(fn)) from None
    except ValueError:              # no signature to check (a builtin): let the call say what is wrong
        pass
    return fn(*args, **kwargs)


def def_line(fn) -> str | None:
    """``file:line`` of the ``def`` of a Python function, None for other callables."""
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else None


def check_axes(model, sizes: dict[str, int], option: str) -> None:
    """Refuse sizes for axes the model does not have (``--unroll k=4``), naming the option."""
    names = [a.name for a in model.graph.axes()]
    unknown = [axis for axis in sizes if axis not in names]
    if unknown:
        raise UserError(f"model {model.name!r} has no axis {unknown[0]!r} (its axes: {', '.join(names) or 'none'})",
                        where=option)


# ---------------------------------------------------------------------------------------------- tables
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


def model_table(model, sizes: dict, batch: int) -> str:
    """Params, inputs and signals of ``model`` with shapes and sizes, and the float32 memory they take."""
    graph = model.graph
    fixed = {a.name: n for a, n in static_sizes(graph).items()}
    axis_size = {a.name: fixed.get(a.name, sizes.get(a.name, 4)) for a in graph.axes()}
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
    lines.append(products_line(model, {k: v for k, v in axis_size.items() if k not in fixed}, batch))
    return "\n".join(lines)


def products_line(model, sizes: dict, batch: int) -> str:
    """The FLOPs of ``model``'s products (:func:`rnnc.flops`), forward and, with a loss, a training step."""
    text = f"products (rc.flops): forward {rc.flops(model, sizes, batch).total:,} FLOPs"
    if model.graph.loss is not None:
        text += f", training step {rc.flops(rc.grad(model), sizes, batch).total:,} FLOPs (every param's gradient)"
    return text


# ---------------------------------------------------------------------------------------------- error lines
def error_line(exc: BaseException, user_file: str) -> str | None:
    """One line ``WHERE: error: Kind: message`` for a failure of the user's file, data or arguments, or None
    for an rnnc bug (which keeps its traceback).

    WHERE is the ``file:line`` an rnnc error quotes in the user's file, else the innermost frame of the
    traceback inside that file, else the option or file at fault.
    """
    if isinstance(exc, UserError):
        return f"{exc.where or user_file or 'rnnc'}: error: {one_line(str(exc))}"
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: error: SyntaxError: {exc.msg}"
    frame = _innermost_user_frame(exc, user_file)
    where = _quoted_line(str(exc), user_file) if isinstance(exc, RnncError) else None
    where = where or (frame and f"{frame[0].co_filename}:{frame[1]}")
    kind = type(exc).__name__
    if isinstance(exc, SystemExit):
        if frame is None:
            return None
        who = "the model file" if frame[0].co_name == "<module>" else f"{frame[0].co_name}()"
        when = " while being loaded" if frame[0].co_name == "<module>" else ""
        return f"{where}: error: SystemExit: {who} called sys.exit({exc.code!r}){when}"
    if where is None:
        if isinstance(exc, OSError) and exc.filename:
            where = str(exc.filename)
        elif isinstance(exc, RnncError) or (isinstance(exc, (ValueError, TypeError, KeyError))
                                            and _raised_by_rnnc_api(exc)):
            where = user_file or "rnnc"
        else:
            return None
    message = one_line(str(exc)) or kind
    if message.startswith(f"{where}: "):      # the error quotes the user's line already: once is enough
        message = message[len(where) + 2:]
    elif message.endswith(f" at {where}"):
        message = message[:-len(where) - 4]
    return f"{where}: error: {kind}: {message}"


def interrupt_line(exc: BaseException, user_file: str) -> str:
    """The one line for Ctrl-C: where the user's file was when it came, if it was running."""
    frame = _innermost_user_frame(exc, user_file)
    return f"{f'{frame[0].co_filename}:{frame[1]}' if frame else 'rnnc'}: interrupted (KeyboardInterrupt)"


def one_line(message: str) -> str:
    """A multi-line message on one line: a line ending in ':' runs on into the next, others are joined by '; '."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    out = lines[0] if lines else ""
    for prev, line in zip(lines, lines[1:]):
        out += (" " if prev.endswith(":") else "; ") + line
    return out


def _innermost_user_frame(exc: BaseException, user_file: str):
    """``(code, lineno)`` of the innermost traceback frame inside ``user_file``, or None."""
    if not user_file:
        return None
    target = os.path.abspath(user_file)
    found = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if os.path.abspath(frame.f_code.co_filename) == target:
            found = (frame.f_code, lineno)
    return found


_FILE_LINE = re.compile(r"([^\s'\"()]+):(\d+)")


def _quoted_line(message: str, user_file: str) -> str | None:
    """The first ``file:line`` in an rnnc error's message that lies in the user's file (rnnc's errors quote the
    line where the user created the node at fault)."""
    if not user_file:
        return None
    target = os.path.abspath(user_file)
    for match in _FILE_LINE.finditer(message):
        if os.path.abspath(match.group(1)) == target:
            return match.group(0)
    return None


def _raised_by_rnnc_api(exc: BaseException) -> bool:
    """Whether ``exc`` comes from rnnc's input checks (a clear message), judged by its raising module."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    if not frames:
        return False
    mod = frames[-1][0].f_globals.get("__name__", "")
    return mod.startswith(("rnnc.interpret.bind", "rnnc.schedule.unroll", "rnnc.dsl", "rnnc.viz"))
