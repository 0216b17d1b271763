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
