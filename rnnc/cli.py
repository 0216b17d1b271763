"""The ``rnnc`` command line: ``rnnc render``, ``rnnc schedule`` and friends.

A MODEL.py is a plain Python file that builds an :class:`rnnc.Model`. It is run with :mod:`runpy` (under the
module name ``__rnnc_model__``, so an ``if __name__ == "__main__":`` block does not run) and the model is
found, in this order:

1. a module-level variable ``model``;
2. a function ``build()`` taking no arguments and returning a Model;
3. the only Model instance among the module's top-level variables.

``MODEL.py:NAME`` picks the variable (or zero-argument function) ``NAME`` instead.

Errors in the user's file are reported as one line quoting its ``file:line`` (exit code 2), not as a
traceback through rnnc; ``--traceback`` shows the full traceback.

Adding a subcommand: write ``def cmd_x(args) -> int`` and a ``def _x_args(parser)`` that declares its
arguments, then add one :class:`Command` line to :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import rnnc as rc
from rnnc.errors import RnncError

EXIT_USER_ERROR = 2
OUTPUT_FORMATS = (".svg", ".png", ".pdf", ".dot")


class UserError(Exception):
    """A mistake in the command line or in the user's MODEL.py; reported as one line, exit code 2."""


# ---------------------------------------------------------------------------------------------- loading models
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
    return _pick_model(namespace, path, name)


def _pick_model(namespace: dict, path: str, name: str = ""):
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
    """``["t=4"]`` or ``["i=3,j=2"]`` -> ``{"t": 4}`` / ``{"i": 3, "j": 2}``."""
    sizes: dict[str, int] = {}
    for item in items or []:
        for part in filter(None, item.split(",")):
            axis, eq, size = part.partition("=")
            if not eq or not axis.strip().isidentifier() or not size.strip().isdigit() or int(size) < 1:
                raise UserError(f"--unroll expects AXIS=SIZE with a positive size (e.g. t=4), got {part!r}")
            sizes[axis.strip()] = int(size)
    return sizes


def _maybe_grad(model, want: bool):
    """The gradient model of ``model`` when ``--grad`` is given, else ``model``."""
    if not want:
        return model
    grad = getattr(rc, "grad", None)
    if grad is None:
        raise UserError("--grad needs rc.grad, which this rnnc version does not provide")
    return grad(model)


def _graph(obj):
    return obj if isinstance(obj, rc.ir.Graph) else obj.graph


# ---------------------------------------------------------------------------------------------- subcommands
def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="Python file defining a Model (MODEL.py[:NAME])")
    p.add_argument("-o", "--output", required=True, metavar="OUT.svg|OUT.png",
                   help="where to write the drawing; the format follows the extension "
                        f"({', '.join(OUTPUT_FORMATS)})")
    p.add_argument("--unroll", action="append", metavar="AXIS=SIZE",
                   help="draw the unrolled graph for these axis sizes, e.g. t=4 or i=3,j=3 (repeatable); "
                        "without it the folded graph is drawn, delays as back arcs")
    p.add_argument("--grad", action="store_true", help="draw the gradient (BPTT) model instead")
    p.add_argument("--detail", action="store_true", help="draw every IR node instead of the compact view")


def cmd_render(args) -> int:
    """Draw the folded model, or its unrolled graph, to SVG or PNG."""
    ext = os.path.splitext(args.output)[1].lower()
    if ext not in OUTPUT_FORMATS:
        raise UserError(f"-o {args.output!r}: the output must end in {', '.join(OUTPUT_FORMATS)}")
    obj = _maybe_grad(load_model(args.model), args.grad)
    sizes = parse_sizes(args.unroll)
    if sizes:
        from rnnc.schedule.unroll import unroll

        obj = unroll(_graph(obj), sizes)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    print(f"wrote {rc.render(obj, args.output, detail=args.detail)}")
    return 0


def _schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="Python file defining a Model (MODEL.py[:NAME])")
    p.add_argument("--grad", action="store_true", help="show the schedule of the gradient (BPTT) model")


def cmd_schedule(args) -> int:
    """Print the model's stages: maps (every step at once) and scans (a recurrence along one axis)."""
    print(rc.schedule(_maybe_grad(load_model(args.model), args.grad)))
    return 0


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


def _gradcheck_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="Python file defining a Model with a loss (MODEL.py[:NAME])")
    p.add_argument("--size", action="append", metavar="AXIS=SIZE",
                   help="loop axis sizes of the random inputs, e.g. t=5 (default 4 for every axis)")
    p.add_argument("--batch", type=int, default=2, help="batch size of the random inputs (default 2)")
    p.add_argument("--entries", type=int, default=6, help="entries checked per param (default 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs, params and entries (default 0)")
    p.add_argument("--tol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")


def cmd_gradcheck(args) -> int:
    """Compare rc.grad's symbolic gradients with central finite differences, in float64, on random inputs.

    Prints one row per param (the largest relative error over the checked entries) and exits with 1 when a
    row fails.
    """
    model = load_model(args.model)
    if not model.loss_terms:
        raise UserError(f"{args.model}: model {model.name!r} has no loss (m.loss(...)) to differentiate")
    rows = finite_difference_table(model, parse_sizes(args.size), args.batch, args.entries, args.seed)
    print(f"{'param':<12} {'shape':<12} {'max rel err':>12}  result")
    failed = 0
    for name, shape, err in rows:
        ok = err <= args.tol
        failed += not ok
        print(f"{name:<12} {str(shape):<12} {err:>12.2e}  {'pass' if ok else 'FAIL'}")
    print(f"{len(rows) - failed}/{len(rows)} params pass (tolerance {args.tol:g})")
    return 1 if failed else 0


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, argument declarations and the function that runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = [
    Command("render", "draw a model folded or unrolled (SVG/PNG via Graphviz)", _render_args, cmd_render),
    Command("schedule", "print a model's map and scan stages", _schedule_args, cmd_schedule),
    Command("gradcheck", "check symbolic gradients against finite differences", _gradcheck_args, cmd_gradcheck),
]


# ---------------------------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnc", description="rnnc: a compiler for recurrent neural networks written as equations.",
        epilog="A MODEL.py defines a module-level 'model', a build() function, or exactly one rc.Model.")
    parser.add_argument("--version", action="version", version=f"rnnc {rc.__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=(cmd.run.__doc__ or cmd.help).strip())
        cmd.add_arguments(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``rnnc`` command; returns the exit code (0 ok, 2 error in the input, 1 internal error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as e:
        return _fail(f"rnnc: error: {e}", args)
    except Exception as e:  # noqa: BLE001 - everything else is sorted into user errors and rnnc bugs
        user_file = getattr(args, "model", "").partition(":")[0]
        line = _user_error_line(e, user_file)
        if line is None:
            raise
        return _fail(line, args)


def _fail(message: str, args) -> int:
    if getattr(args, "traceback", False):
        traceback.print_exc()
    print(message, file=sys.stderr)
    return EXIT_USER_ERROR


def _user_error_line(exc: BaseException, user_file: str) -> str | None:
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


if __name__ == "__main__":
    sys.exit(main())
