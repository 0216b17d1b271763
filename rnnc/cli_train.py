"""``rnnc train MODEL.py --data TRAIN.npz`` and ``rnnc predict MODEL.rnnc --input X.npz``: the user's arrays
matched to a model's inputs and checked, the trainer built from the options, portable model files loaded.

A data file is an ``.npz`` with one array per input of the model, named as the input: ``x`` laid out
``(T, B, *shape)`` for a sequence input, ``x_lengths`` ``(B,)`` for an input declared with ``lengths=True``
(sequences padded to ``T``: :func:`rnnc.data.pad` makes both), ``(B, *shape)`` for a per-sample input such as
a class label ``y``. Every refusal is one line naming the file and the array, with the layout the model
expects and, where the shape suggests one, the layout the array seems to have.
"""
from __future__ import annotations

import argparse
import os
import zipfile

import numpy as np

import rnnc as rc
from rnnc.cli_support import UserError, load_portable, unquoted

CHECKPOINT_FILE = "checkpoint.npz"


# ---------------------------------------------------------------------------------------------- argument types
def truncation(text: str) -> tuple[int, int]:
    """``"20,10"`` -> ``(20, 10)``: truncated BPTT's ``k1`` (steps per chunk) and ``k2`` (steps back)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"expected K1,K2 with two positive integers (e.g. 20,10), got {text!r}")
    return int(parts[0]), int(parts[1])


# ---------------------------------------------------------------------------------------------- data files
def _layout(node) -> str:
    """``(T, B, 3)``, ``(B,)``: the array layout of an input, axes in capitals."""
    dims = [a.name.upper() for a in node.axes] + ["B"] + [str(d) for d in node.shape]
    return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def read_npz(path: str, option: str) -> dict:
    """The arrays of an ``.npz`` (no pickles), or a UserError naming the option."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{path!r} is not a readable .npz file ({type(e).__name__}: {e})", where=option) from None


def load_arrays(path: str, model, option: str, skip=(), optional=()) -> dict:
    """The arrays of ``path`` that ``model`` reads, checked against its inputs' layouts.

    ``skip``: inputs the caller makes (dropout masks); ``optional``: inputs that may be absent (the targets,
    for a forward pass). Arrays the model does not read are left out. A missing or misshaped array is a
    UserError at ``path``."""
    arrays = read_npz(path, option)
    graph = model.graph
    data, sizes = {}, {}
    for name, node in graph.inputs.items():
        if name in skip:
            continue
        if name not in arrays:
            if name in optional:
                continue
            raise UserError(f"missing array {name!r}: model {model.name!r} reads input {name!r} laid out "
                            f"{_layout(node)}; the file holds {', '.join(sorted(arrays)) or 'no arrays'}",
                            where=path)
        try:
            data[name] = _checked(name, arrays[name], node, arrays)
        except ValueError as e:
            raise UserError(f"array {e}", where=path) from None
        for axis, n in zip([a.name.upper() for a in node.axes] + ["B"], data[name].shape):
            first = sizes.setdefault(axis, (n, name))
            if first[0] != n:
                raise UserError(f"array {name!r}: axis {axis} has size {n}, but array {first[1]!r} has "
                                f"{first[0]} (layout {_layout(node)})", where=path)
    return data


def _checked(name: str, arr: np.ndarray, node, arrays: dict) -> np.ndarray:
    """``arr`` if it fits input ``node``; else a one-line ValueError with a layout hint (batch-first...)."""
    from rnnc.data import check_lengths, check_sequence_array

    if arr.dtype.kind not in "iufb":
        raise ValueError(f"{name}: expected numbers, got {arr.dtype}")
    if node.dtype == "int" and arr.dtype.kind not in "iub":
        raise ValueError(f"{name}: input {name!r} holds integers (class indices or lengths), got {arr.dtype}")
    if node.op == "lengths":                  # (B,) in 1..T; against its sequence when that is laid out right
        owner = np.asarray(arrays.get(name.removesuffix("_lengths"), ()))
        steps = owner.shape[0] if owner.ndim > 1 else int(np.max(arr, initial=1))
        return check_lengths(name, arr, batch=len(arr) if arr.ndim == 1 else -1, steps=steps)
    if len(node.axes) == 1:
        return check_sequence_array(name, arr, node.shape, arrays.get(f"{name}_lengths"))
    if arr.ndim != len(node.axes) + 1 + len(node.shape) or arr.shape[len(node.axes) + 1:] != node.shape:
        raise ValueError(f"{name}: expected layout {_layout(node)}, got shape {arr.shape}")
    return arr


# ---------------------------------------------------------------------------------------------- training
def optimizer(name: str, lr: float | None):
    """``adam`` (default lr 1e-3), ``momentum`` (0.01, momentum 0.9) or ``sgd`` (0.01, no momentum)."""
    from rnnc.train import Adam, GradientDescentMomentum

    if name == "adam":
        return Adam(lr if lr is not None else 1e-3)
    return GradientDescentMomentum(lr if lr is not None else 0.01, momentum=0.9 if name == "momentum" else 0.0)


def train_on_data(args, model) -> int:
    """Train ``model`` on ``--data`` (and ``--val``) with the Trainer; print one line per epoch."""
    from rnnc.interpret.boundary import check_data
    from rnnc.nn.base import network
    from rnnc.train import CheckpointError, Trainer
    from rnnc.train.distributed import abort_on_error

    if args.steps is not None:
        raise UserError("--steps counts the steps of a file's own train(); with --data give --epochs",
                        where="--steps")
    if args.save and not str(args.save).endswith(".rnnc"):
        raise UserError(f"{args.save!r}: with --data, --save writes a portable model file: name it "
                        "MODEL.rnnc", where="--save")
    if model.graph.loss is None:
        raise UserError(f"model {model.name!r} has no loss to train: add one with m.loss(...)", where=args.model)
    noise = set(network(model).noise)
    sets = {"data": args.data, "val": args.val}
    arrays = {}
    for key, path in sets.items():
        if path is None:
            continue
        arrays[key] = _with_where(load_arrays, path, path, model, f"--{key}", skip=noise)
        _with_where(check_data, path, model.graph, arrays[key], True)
    if args.sync_batchnorm and not args.distributed:
        raise UserError("--sync-batchnorm synchronises batch norm across the ranks of --distributed training",
                        where="--sync-batchnorm")
    comm = _world() if args.distributed else None
    say = print if comm is None or comm.Get_rank() == 0 else _quiet     # rank 0 speaks for the job
    if comm is not None and args.sync_batchnorm:
        from rnnc.train.distributed import DataParallel

        comm = DataParallel(comm, sync_batchnorm=True)
    try:
        trainer = Trainer(model, optimizer(args.optimizer, args.lr), batch_size=args.batch, seed=args.seed,
                          clip=args.clip, checkpoint=_checkpoint(args), engine=args.engine, truncate=args.truncate,
                          comm=comm)
    except ValueError as e:
        if "sync_batchnorm" not in str(e):
            raise
        raise UserError(f"the network of model {model.name!r} has per-rank batch norm: let the file's build() "
                        f"take sync_batchnorm and pass it on, nn.Network(m, sync_batchnorm=sync_batchnorm); "
                        f"--sync-batchnorm calls build(sync_batchnorm=True)", where="--sync-batchnorm") from None
    if args.resume:
        try:
            trainer.resume(trainer.checkpoint)
        except CheckpointError as e:
            raise UserError(unquoted(str(e), trainer.checkpoint), where=trainer.checkpoint) from None
        say(f"resumed from {trainer.checkpoint}: {trainer.epoch} epochs and {trainer.batch_index} batches done")
    epochs = args.epochs or 10
    with abort_on_error(comm):      # one rank's failure ends the job, rather than leaving the others waiting
        for epoch in range(trainer.epoch + 1, epochs + 1):
            row = trainer.fit(arrays["data"], epochs=epoch, val=arrays.get("val"))[-1]
            say(epoch_line(row, epochs), flush=True)
    if args.save and say is print:
        rc.save(str(args.save), model, trainer.params)
        print(f"wrote {args.save}")
    return 0


def _world():
    """``MPI.COMM_WORLD`` for ``--distributed`` (:mod:`rnnc.train.distributed`)."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError("--distributed needs mpi4py and an MPI: pip install 'rnnc[mpi]', then run "
                        "mpiexec -n N rnnc train ... --distributed", where="--distributed") from None
    return MPI.COMM_WORLD


def _quiet(*args, **kwargs) -> None:
    pass


def _with_where(fn, path, *args, **kwargs):
    """``fn(*args, **kwargs)``, a UserError or a ValueError about the data reported at ``path``."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        raise UserError(str(e), where=e.where or path) from None
    except ValueError as e:
        raise UserError(f"{type(e).__name__}: {e}", where=path) from None


def _checkpoint(args) -> str | None:
    if args.checkpoint is None:
        if args.resume:
            raise UserError("--resume continues from the checkpoint in --checkpoint DIR; give the folder",
                            where="--resume")
        return None
    if os.path.exists(args.checkpoint) and not os.path.isdir(args.checkpoint):
        raise UserError(f"{args.checkpoint!r} is a file; --checkpoint names a folder", where="--checkpoint")
    os.makedirs(args.checkpoint, exist_ok=True)
    path = os.path.join(args.checkpoint, CHECKPOINT_FILE)
    if args.resume and not os.path.isfile(path):
        raise UserError(f"no checkpoint to resume from in {args.checkpoint!r} (expected {CHECKPOINT_FILE})",
                        where="--resume")
    return path


def epoch_line(row: dict, epochs: int) -> str:
    """``epoch 2/5  loss 0.4123  accuracy 0.812  val_loss ...  (1.3 s, 2,210 samples/s)``."""
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds", "samples_s"))
    return f"epoch {row['epoch']}/{epochs}  {metrics}  ({row['seconds']:.2f} s, {row['samples_s']:,.0f} samples/s)"


# ---------------------------------------------------------------------------------------------- prediction
def predict_portable(args) -> int:
    """Run a ``.rnnc`` model on ``--input``; write its outputs (and loss, if the targets are there)."""
    from rnnc.interpret.rolled import _loss_only_inputs

    if args.input is None or args.output is None:
        raise UserError("a .rnnc model needs --input X.npz (its inputs) and -o OUT.npz (where the outputs go)",
                        where="--input" if args.input is None else "--output")
    model, params = load_portable(args.model)
    inputs = _with_where(load_arrays, args.input, args.input, model, "--input",
                         optional=_loss_only_inputs(model.graph))
    if args.engine == "interpret":
        res = _with_where(rc.interpret, args.input, model, inputs, params)
    else:
        res = _with_where(rc.compile(model).forward, args.input, inputs, params)
    out = {name: np.asarray(v) for name, v in res.outputs.items()}
    if res.loss is not None:
        out["loss"] = np.asarray(res.loss)
    np.savez(args.output, **out)
    shown = ", ".join(f"{k} {v.shape}" for k, v in out.items() if k != "loss")
    print(f"wrote {args.output}: {shown}" + (f"; loss {float(res.loss):.6g}" if res.loss is not None else ""))
    return 0
