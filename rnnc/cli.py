"""The ``rnnc`` command line: ``rnnc render``, ``rnnc schedule`` and friends.

A MODEL.py is a plain Python file that builds an :class:`rnnc.Model`. It is run with :mod:`runpy` (under the
module name ``__rnnc_model__``, so an ``if __name__ == "__main__":`` block does not run) and the model is
found, in this order:

1. a module-level variable ``model``;
2. a function ``build()`` taking no arguments and returning a Model;
3. the only Model instance among the module's top-level variables.

``MODEL.py:NAME`` picks the variable (or zero-argument function) ``NAME`` instead. ``render``, ``schedule``,
``gradcheck``, ``compile`` and ``predict`` also take a portable ``MODEL.rnnc`` (``rc.save``, ``rnnc train
--save``): it is loaded and checked, never run.

Every failure of the user's file, data or arguments is reported by :func:`run_command`, the one wrapper
around every subcommand, as one line ``FILE:LINE: error: Kind: message`` (``FILE:LINE`` is the user's line;
an option such as ``--batch`` or a file stands in for it when the arguments are at fault) with exit code 2;
``--traceback`` shows the full traceback before that line. Ctrl-C exits with 130 and one line; an rnnc bug
keeps its traceback and exits with 1. Sizes are checked by the argument types of :mod:`rnnc.cli_support`
and the folders of output files are created.

Adding a subcommand: write ``def cmd_x(args) -> int`` and a ``def _x_args(parser)`` that declares its
arguments (the user's file as the positional ``model``, sizes with the checked types, outputs with
``output_file``), then add one :class:`Command` line to :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import sys
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import rnnc as rc
from rnnc.cli_support import (
    UserError,
    axis_sizes,
    call_user,
    check_axes,
    def_line,
    error_line,
    existing_file,
    finite_difference_table,
    input_shape,
    interrupt_line,
    load_model,
    load_namespace,
    make_output_folders,
    merge_sizes,
    model_table,
    nonnegative_int,
    output_file,
    pick_model,
    positive_float,
    positive_int,
    products_line,
    random_inputs,
    split_spec,
)
from rnnc.cli_train import predict_portable, train_on_data, truncation

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
OUTPUT_FORMATS = (".svg", ".png", ".pdf", ".dot")


def _maybe_grad(model, want: bool):
    """The gradient model of ``model`` when ``--grad`` is given, else ``model``."""
    if not want:
        return model
    grad = getattr(rc, "grad", None)
    if grad is None:
        raise UserError("rc.grad is not provided by this rnnc version", where="--grad")
    return grad(model)


def _graph(obj):
    return obj if isinstance(obj, rc.ir.Graph) else obj.graph


# ---------------------------------------------------------------------------------------------- subcommands
def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="Python file defining a Model (MODEL.py[:NAME])")
    p.add_argument("-o", "--output", required=True, metavar="OUT.svg|OUT.png", type=output_file(*OUTPUT_FORMATS),
                   help="where to write the drawing; the format follows the extension "
                        f"({', '.join(OUTPUT_FORMATS)})")
    p.add_argument("--unroll", action="append", metavar="AXIS=SIZE", type=axis_sizes,
                   help="draw the unrolled graph for these axis sizes, e.g. t=4 or i=3,j=3 (repeatable); "
                        "without it the folded graph is drawn, delays as back arcs")
    p.add_argument("--grad", action="store_true", help="draw the gradient (BPTT) model instead")
    p.add_argument("--detail", action="store_true", help="draw every IR node instead of the compact view")


def cmd_render(args) -> int:
    """Draw the folded model, or its unrolled graph, to SVG or PNG."""
    model = load_model(args.model)
    sizes = merge_sizes(args.unroll)
    check_axes(model, sizes, "--unroll")
    obj = _maybe_grad(model, args.grad)
    if sizes:
        from rnnc.schedule.unroll import unroll

        obj = unroll(_graph(obj), sizes)
    print(f"wrote {rc.render(obj, args.output, detail=args.detail)}")
    return 0


def _schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="Python file defining a Model (MODEL.py[:NAME])")
    p.add_argument("--grad", action="store_true", help="show the schedule of the gradient (BPTT) model")


def cmd_schedule(args) -> int:
    """Print the model's stages: maps (every step at once) and scans (a recurrence along one axis)."""
    print(rc.schedule(_maybe_grad(load_model(args.model), args.grad)))
    return 0


def _gradcheck_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="Python file defining a Model with a loss (MODEL.py[:NAME])")
    p.add_argument("--size", action="append", metavar="AXIS=SIZE", type=axis_sizes,
                   help="loop axis sizes of the random inputs, e.g. t=5 (default 4 for every axis)")
    p.add_argument("--batch", type=positive_int, default=2, help="batch size of the random inputs (default 2)")
    p.add_argument("--entries", type=positive_int, default=6, help="entries checked per param (default 6)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the inputs, params and entries (default 0)")
    p.add_argument("--tol", type=positive_float, default=1e-5, help="relative tolerance (default 1e-5)")


def cmd_gradcheck(args) -> int:
    """Compare rc.grad's symbolic gradients with central finite differences, in float64, on random inputs.

    Prints one row per param (the largest relative error over the checked entries) and exits with 1 when a
    row fails.
    """
    model = load_model(args.model)
    if not model.loss_terms:
        raise UserError(f"model {model.name!r} has no loss (m.loss(...)) to differentiate")
    sizes = merge_sizes(args.size)
    check_axes(model, sizes, "--size")
    rows = finite_difference_table(model, sizes, args.batch, args.entries, args.seed)
    print(f"{'param':<12} {'shape':<12} {'max rel err':>12}  result")
    failed = 0
    for name, shape, err in rows:
        ok = err <= args.tol
        failed += not ok
        print(f"{name:<12} {str(shape):<12} {err:>12.2e}  {'pass' if ok else 'FAIL'}")
    print(f"{len(rows) - failed}/{len(rows)} params pass (tolerance {args.tol:g})")
    return 1 if failed else 0


def _compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="Python file defining a Model (MODEL.py[:NAME])")
    p.add_argument("--target", default="cpu", choices=("cpu", "cuda"), help="backend (default cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--emit-source", action="store_true", help="print the generated module")
    p.add_argument("--grad", action="store_true", help="compile (and print) the loss-and-gradient kernel instead")


def cmd_compile(args) -> int:
    """Compile the model with ``rc.compile`` and report the kernel's build time; ``--emit-source`` prints it."""
    model = load_model(args.model)
    f = rc.compile(model, target=args.target, dtype=args.dtype)
    inputs = random_inputs(model, {}, 2, 0)
    params = model.init_params(seed=0, dtype=args.dtype)
    if args.grad:
        f.loss_and_grad(inputs, params)              # builds and compiles the kernel on first use
    else:
        f.forward(inputs, params)
    kernel = f.kernel("grad" if args.grad else ("loss" if model.graph.loss is not None else "outputs"))
    variant = "loss-and-gradient" if args.grad else "forward"
    if args.emit_source:
        print(kernel.source)
    stats = ", ".join(f"{k} {v:.3g}s" if isinstance(v, float) else f"{k} {v}" for k, v in kernel.stats.items())
    print(f"# compiled {model.name!r} ({variant} kernel, {args.target}, {args.dtype}){': ' + stats if stats else ''}",
          file=sys.stderr if args.emit_source else sys.stdout)
    return 0


def _summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="a Model (MODEL.py[:NAME]), or a file defining 'classifier'")
    p.add_argument("--input-shape", metavar="C,H,W", type=input_shape,
                   help="per-sample input shape, for a list of layers")
    p.add_argument("--size", action="append", metavar="AXIS=SIZE", type=axis_sizes,
                   help="loop axis sizes (default 4 each)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size of the memory estimate (default 1)")


def cmd_summary(args) -> int:
    """Shapes, parameter counts and memory: ``rc.summary`` for a Classifier, a value table for a Model."""
    path, name = split_spec(args.model)
    ns = load_namespace(path)
    target = ns.get(name or "classifier", ns.get("layers"))
    if target is not None and not isinstance(target, rc.Model) and (hasattr(target, "layers") or args.input_shape):
        print(rc.summary(target, args.input_shape, batch=args.batch))
        if hasattr(target, "build"):
            print(products_line(target.build(train=True).model, {}, args.batch))
        return 0
    model = pick_model(ns, path, name)
    sizes = merge_sizes(args.size)
    check_axes(model, sizes, "--size")
    print(model_table(model, sizes, args.batch))
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="Python file defining a Model (MODEL.py[:NAME])")
    p.add_argument("--size", action="append", metavar="AXIS=SIZE", type=axis_sizes,
                   help="loop axis sizes (default t=32)")
    p.add_argument("--batch", type=positive_int, default=16, help="batch size (default 16)")
    p.add_argument("--repeat", type=positive_int, default=5,
                   help="timed calls per entry (default 5; the best is shown)")
    p.add_argument("--no-interpret", action="store_true", help="skip the numpy interpreter's rows")
    p.add_argument("--no-compiled", action="store_true", help="skip the compiled rows")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))


def _best_time(fn, repeat: int) -> float:
    import time

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cmd_bench(args) -> int:
    """Time forward and loss-and-gradient: numpy interpreter vs the compiled CPU kernels (best of --repeat).

    The first compiled call (Numba compilation, or loading its cache) is reported separately. A MODEL.py
    that defines ``bench_peers(inputs, params) -> {name: fn}`` (the same loss and gradient in PyTorch, JAX,
    ...; see examples/char_lstm.py) gets a row per peer, with its loss checked against the interpreter's.
    """
    import time

    path, name = split_spec(args.model)
    namespace = load_namespace(path)
    model = pick_model(namespace, path, name)
    check_axes(model, merge_sizes(args.size), "--size")
    sizes = {"t": 32, **merge_sizes(args.size)}
    inputs = random_inputs(model, sizes, args.batch, 0)
    params = model.init_params(seed=0, dtype=args.dtype)
    run = {"sizes": {a.name: sizes.get(a.name, 4) for a in model.graph.axes()}, "batch": args.batch}
    has_loss = model.graph.loss is not None
    entries = []
    if not args.no_interpret:
        gm = rc.grad(model) if has_loss else None
        entries.append(("interpret forward", lambda: rc.interpret(model, inputs, params, **run), False))
        if has_loss:
            entries.append(("interpret loss+grad", lambda: rc.interpret(gm, inputs, params, **run), False))
    if not args.no_compiled:
        f = rc.compile(model, dtype=args.dtype)
        entries.append(("compiled forward", lambda: f.forward(inputs, params), True))
        if has_loss:
            entries.append(("compiled loss+grad", lambda: f.loss_and_grad(inputs, params), True))
    peers = call_user(namespace["bench_peers"], inputs, params) if callable(namespace.get("bench_peers")) else {}
    if peers:
        _check_peers(model, inputs, params, run, peers)
    entries += [(f"{peer} loss+grad", fn, True) for peer, fn in peers.items()]
    rows = []
    for label, fn, first in entries:
        if first:                    # compiled code: the first call compiles (or loads a cache)
            t0 = time.perf_counter()
            fn()
            rows.append((f"{label} (first call)", time.perf_counter() - t0))
        rows.append((label, _best_time(fn, args.repeat)))
    print(f"{model.name}: sizes {run['sizes']}, batch {args.batch}, {args.dtype}")
    for label, sec in rows:
        print(f"  {label:<34} {sec * 1e3:>10.3f} ms")
    return 0


def _check_peers(model, inputs, params, run, peers) -> None:
    """Refuse to time a peer whose loss differs from the interpreter's (it would be another model)."""
    want = rc.interpret(model, inputs, params, **run).loss
    for peer, fn in peers.items():
        got = fn()
        if not np.isclose(got, want, rtol=1e-3):
            raise UserError(f"bench_peers: {peer} computes loss {got:.6g}, rnnc's interpreter {want:.6g}",
                            where=def_line(fn))


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.py", help="a file defining a Model with a loss (MODEL.py[:NAME]), "
                                                     "trained on --data; or an example with its own train()")
    p.add_argument("--data", metavar="TRAIN.npz", type=existing_file,
                   help="training arrays named after the model's inputs: x (T, B, ...), x_lengths (B,) for an "
                        "input with lengths=True (pad with rnnc.data.pad), y (B,) or (T, B) ...")
    p.add_argument("--val", metavar="VAL.npz", type=existing_file, help="validation arrays, evaluated each epoch")
    p.add_argument("--epochs", type=positive_int, help="training epochs (default 10 with --data)")
    p.add_argument("--batch", type=positive_int, default=32, help="mini-batch size (default 32)")
    p.add_argument("--optimizer", default="adam", choices=("adam", "momentum", "sgd"), help="(default adam)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default 1e-3 for adam, 0.01 otherwise)")
    p.add_argument("--clip", type=positive_float, help="clip gradients to this global norm")
    p.add_argument("--truncate", metavar="K1,K2", type=truncation,
                   help="truncated BPTT: chunks of K1 steps, gradients flow back K2 steps (see docs/bptt.md)")
    p.add_argument("--engine", default="auto", choices=("auto", "compiled", "interpret"),
                   help="compiled kernels, the numpy interpreter, or auto: compiled where the backend has "
                        "every op (default)")
    p.add_argument("--checkpoint", metavar="DIR", help="save the training state in DIR every epoch and on Ctrl-C")
    p.add_argument("--resume", action="store_true", help="continue exactly from the checkpoint in --checkpoint DIR")
    p.add_argument("--distributed", action="store_true",
                   help="with --data: data-parallel over the ranks of mpiexec -n N (pip install 'rnnc[mpi]'); "
                        "--batch is the global batch, rank 0 prints and saves (see docs/distributed.md)")
    p.add_argument("--sync-batchnorm", action="store_true",
                   help="with --distributed: batch norm normalises with the statistics of the global batch, "
                        "reduced across the ranks inside the forward and backward passes; the file's build() is called "
                        "as build(sync_batchnorm=True) and passes it to nn.Network(m, sync_batchnorm=...)")
    p.add_argument("--steps", type=positive_int, help="training steps, for an example's own train()")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--save", metavar="MODEL.rnnc", type=output_file(),
                   help="with --data: write the trained model as a portable MODEL.rnnc (rc.save); for an "
                        "example's train(): its params (PARAMS.npz)")


def cmd_train(args) -> int:
    """Train a model file on your data: ``rnnc train MODEL.py --data TRAIN.npz [--val VAL.npz]``, the arrays
    matched to the model's inputs by name; or run an example's own ``train(steps=..., seed=0, save=None, ...)``
    (``epochs=`` for those that count epochs; see examples/)."""
    path, name = split_spec(args.model)
    ns = load_namespace(path)
    train = ns.get("train")
    if args.data is not None:
        sync = {"sync_batchnorm": True} if args.sync_batchnorm and args.distributed else None
        return train_on_data(args, pick_model(ns, path, name, sync))
    if args.val is not None:
        raise UserError("--val needs --data TRAIN.npz", where="--val")
    if args.distributed:
        raise UserError("--distributed trains a model file on --data TRAIN.npz", where="--distributed")
    if args.sync_batchnorm:
        raise UserError("--sync-batchnorm goes with --distributed and --data TRAIN.npz", where="--sync-batchnorm")
    if not callable(train):
        raise UserError("the file defines no train() function: give --data TRAIN.npz (arrays named after the "
                        "model's inputs) to train its model; the examples with their own train() are hello.py, "
                        "char_lstm.py, seq2seq.py and many_to_one.py")
    kwargs = {"seed": args.seed, "save": args.save and str(args.save)}
    for key in ("steps", "epochs"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    out = call_user(train, **kwargs)
    if not isinstance(out, dict):
        raise UserError(f"train() returned {type(out).__name__}; rnnc train expects a dict such as "
                        f"{{'loss': ..., 'losses': [...]}}", where=def_line(train))
    summary = {k: v for k, v in out.items() if isinstance(v, (int, float, str))}
    if out.get("losses"):
        summary["final loss"] = float(np.mean(out["losses"][-10:]))
    print("result: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v!r}" for k, v in summary.items()))
    if args.save:
        print(f"wrote {args.save}")
    return 0


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.rnnc|EXAMPLE.py",
                   help="a portable model file (rc.save, rnnc train --save), or a file defining predict(params, "
                        "prompt)")
    p.add_argument("--input", metavar="X.npz", type=existing_file,
                   help="for MODEL.rnnc: its inputs, named as the model's (targets optional: then the loss too)")
    p.add_argument("-o", "--output", metavar="OUT.npz", type=output_file(".npz"),
                   help="for MODEL.rnnc: where the outputs are written")
    p.add_argument("--engine", default="compiled", choices=("compiled", "interpret"),
                   help="for MODEL.rnnc: rc.compile (default) or the numpy interpreter")
    p.add_argument("--params", metavar="PARAMS.npz", type=existing_file,
                   help="for EXAMPLE.py: params written by rnnc train --save")
    p.add_argument("--prompt", help="for EXAMPLE.py: its input (letters, digits, numbers...); its default otherwise")


def cmd_predict(args) -> int:
    """Run a portable ``MODEL.rnnc`` on ``--input X.npz`` and write its outputs to ``-o OUT.npz``; or run a
    trained example on ``--prompt`` with params saved by ``rnnc train --save``."""
    if split_spec(args.model)[0].endswith(".rnnc"):
        return predict_portable(args)
    if args.params is None:
        raise UserError("an example's predict() needs --params PARAMS.npz (written by rnnc train --save)",
                        where="--params")
    ns = load_namespace(args.model)
    predict = ns.get("predict")
    if not callable(predict):
        raise UserError("the file defines no predict(params, prompt) function")
    try:
        with np.load(args.params, allow_pickle=False) as data:
            params = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{args.params!r} is not a params file written by rnnc train --save "
                        f"({type(e).__name__}: {e})", where="--params") from None
    print(call_user(predict, params, args.prompt) if args.prompt is not None else call_user(predict, params))
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
    Command("gradcheck", "check symbolic gradients against finite differences", _gradcheck_args, cmd_gradcheck),
    Command("compile", "compile a model to CPU kernels; --emit-source prints them", _compile_args, cmd_compile),
    Command("summary", "shapes, parameter counts and memory of a model", _summary_args, cmd_summary),
    Command("bench", "time the interpreter and the compiled kernels", _bench_args, cmd_bench),
    Command("train", "train a model file on .npz data (--data), or an example with its own train()", _train_args,
            cmd_train),
    Command("predict", "run a .rnnc model file on .npz inputs, or a trained example on a prompt", _predict_args,
            cmd_predict),
]


# ---------------------------------------------------------------------------------------------- entry point
class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose refusals are one line, ``--option: error: message``, with exit code 2."""

    def error(self, message: str):
        where, sep, rest = message.partition(": ")
        if sep and where.startswith("argument "):
            where = where[len("argument "):]
        else:
            where, rest = self.prog, message
        self.exit(EXIT_USER_ERROR, f"{where}: error: {rest} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rnnc", description="rnnc: a compiler for recurrent neural networks written as equations.",
        epilog="A MODEL.py defines a module-level 'model', a build() function, or exactly one rc.Model.")
    parser.add_argument("--version", action="version", version=f"rnnc {rc.__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=(cmd.run.__doc__ or cmd.help).strip())
        cmd.add_arguments(p)
        p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                       help="show the full Python traceback of an error")
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``rnnc`` command; returns the exit code (0 ok, 2 error in the input, 130 interrupted, 1 an rnnc
    bug, which keeps its traceback)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:          # --help, --version, or a refused argument (its one line is printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USER_ERROR)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.run``: the one place where failures become one line on stderr.

    A failure of the user's file, data or arguments (anything :func:`rnnc.cli_support.error_line` can place,
    ``sys.exit`` in the user's file included) prints ``FILE:LINE: error: Kind: message`` and returns 2; Ctrl-C
    prints one line and returns 130; anything else is an rnnc bug and propagates with its traceback.
    """
    user_file = split_spec(args.model)[0] if getattr(args, "model", None) else ""
    try:
        make_output_folders(args)
        return args.run(args)
    except KeyboardInterrupt as e:
        return _fail(e, interrupt_line(e, user_file), args, EXIT_INTERRUPTED)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - sorted into user errors and rnnc bugs just below
        line = error_line(e, user_file)
        if line is None:
            raise
        return _fail(e, line, args, EXIT_USER_ERROR)


def _fail(exc: BaseException, line: str, args, code: int) -> int:
    if getattr(args, "traceback", False):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
