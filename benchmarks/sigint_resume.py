"""Ctrl-C at random moments, then resume: is the result bit-identical to a run never interrupted?

    python benchmarks/sigint_resume.py -n 100            # prints how many of 100 resumed bit-identically
    python benchmarks/sigint_resume.py -n 20 --old       # the behaviour before the safe point, for comparison

Each try starts a small training in a fresh process with a checkpoint (BatchNorm buffers, dropout masks, Adam
state, a cosine schedule, clipping and a validation set: every piece of state a resume must restore), waits
until ``fit`` is about to start, sends SIGINT after a random delay within the training's length, then runs a
second fresh process that resumes from the checkpoint (or starts over if none was written) to the end. Its final
params and buffers are compared bit for bit with those of an uninterrupted run. ``--old`` makes the first
process behave as the trainer did before interrupts were deferred (the signal raises wherever it lands, and
the trainer saves what it has).

``tests/train/test_safety_files.py`` runs a few tries of :func:`run_tries`.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 12


def _trainer(checkpoint: str | None, engine: str):
    import rnnc.nn as nn
    from rnnc.train import Adam, CosineLR, Trainer

    clf = nn.Classifier((nn.Dense(16, activation="tanh"), nn.BatchNorm(), nn.Dropout(0.2), nn.Dense(3),
                         nn.Softmax()), (8,))
    return Trainer(clf, Adam(0.01), batch_size=4, seed=7, dtype="float64", schedule=CosineLR(EPOCHS), clip=2.0,
                   checkpoint=checkpoint, progress=False, engine=engine)


def _data(n: int, seed: int) -> dict:
    x = np.random.default_rng(seed).standard_normal((n, 8))
    return {"x": x, "y": (x[:, :3].argmax(1) + (x[:, 3] > 1)) % 3}


def child(folder: str, engine: str, old: bool) -> None:
    """One training process: resume from ``folder/run.npz`` if it exists, train to the end, save the result."""
    ck = os.path.join(folder, "run.npz")
    tr = _trainer(ck, engine)
    if os.path.exists(ck):
        tr.resume(ck)
    if old:   # the trainer before the safe point: no handler, save whatever state the interrupt left
        from rnnc.train.interrupts import DeferredInterrupts

        class Immediate(DeferredInterrupts):
            def __enter__(self):
                return self

        tr._interrupts, fit = Immediate(), tr.fit

        def old_fit(*args, **kwargs):
            try:
                return fit(*args, **kwargs)
            except KeyboardInterrupt:
                tr.save_checkpoint(ck)
                raise
        tr.fit = old_fit
    print("READY", flush=True)
    t0 = time.perf_counter()
    tr.fit(_data(64, 1), epochs=EPOCHS, val=_data(16, 2))
    print(f"FIT {time.perf_counter() - t0:.3f}", flush=True)
    np.savez(os.path.join(folder, "final.npz"), **{f"param/{k}": v for k, v in tr.params.items()},
             **{f"buffer/{k}": v for k, v in tr.buffers.items()})


class ResumeFailed(RuntimeError):
    """The second process could not resume (e.g. it refused a checkpoint saved in an inconsistent state)."""


def _spawn(folder: str, engine: str, old: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", folder, "--engine", engine]
    return subprocess.Popen(cmd + (["--old"] if old else []), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=str(ROOT))


def _finish(folder: str, engine: str) -> tuple[dict, float]:
    proc = _spawn(folder, engine)
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise ResumeFailed(f"the resuming process failed (exit {proc.returncode}): {last[0]}")
    seconds = float(out.split(b"FIT ")[1].split()[0])
    with np.load(os.path.join(folder, "final.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}, seconds


def reference(engine: str = "interpret") -> tuple[dict, float]:
    """The final arrays of an uninterrupted run and the seconds its ``fit`` took."""
    with tempfile.TemporaryDirectory() as folder:
        return _finish(folder, engine)


def interrupted(delay: float, engine: str = "interpret", old: bool = False) -> dict:
    """Interrupt a run ``delay`` seconds after ``fit`` starts, resume it in a new process; its final arrays."""
    with tempfile.TemporaryDirectory() as folder:
        proc = _spawn(folder, engine, old)
        line = proc.stdout.readline()
        if line.strip() != b"READY":
            raise RuntimeError(f"the training process did not start: {line!r}")
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=600)   # exits with KeyboardInterrupt, or 0 if the signal came after the end
        return _finish(folder, engine)[0]


def run_tries(n: int, seed: int = 0, engine: str = "interpret", old: bool = False, log=None) -> tuple[int, list]:
    """``n`` interrupted-and-resumed runs at random delays; returns (how many matched bit for bit, the delays
    of those that did not: different arrays, or a resume that refused the checkpoint)."""
    ref, seconds = reference(engine)
    rng = np.random.default_rng(seed)
    same, differ = 0, []
    for k in range(n):
        delay = float(rng.uniform(0.0, 1.2 * seconds))
        try:
            got = interrupted(delay, engine, old)
            ok = set(got) == set(ref) and all(np.array_equal(got[a], ref[a]) for a in ref)
            note = "same" if ok else "DIFFERENT"
        except ResumeFailed as e:
            ok, note = False, f"NOT RESUMED ({e})"
        same += ok
        if not ok:
            differ.append(delay)
        if log:
            log(f"{k + 1}/{n}: SIGINT after {delay:.3f} s of {seconds:.3f}: {note}")
    return same, differ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100, help="number of interrupted runs")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random delays")
    ap.add_argument("--engine", default="interpret", choices=("interpret", "compiled", "auto"))
    ap.add_argument("--old", action="store_true", help="interrupt as the trainer did before the safe point")
    ap.add_argument("--child", metavar="FOLDER", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))
        child(args.child, args.engine, args.old)
        return
    same, differ = run_tries(args.n, args.seed, args.engine, args.old, log=lambda s: print(s, flush=True))
    print(f"{same}/{args.n} interrupted runs resumed bit-identically" + (f"; different at delays {differ}"
                                                                          if differ else ""))


if __name__ == "__main__":
    main()
