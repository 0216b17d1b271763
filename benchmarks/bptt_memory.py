"""Peak memory of LSTM gradients with and without checkpointing: the reference interpreter, or (``--compiled``)
rnnc's compiled ``loss_and_grad`` against PyTorch and JAX, each variant in its own process.

    python benchmarks/bptt_memory.py [--T 1000] [--batch 16] [--hidden 64]
    python benchmarks/bptt_memory.py --compiled [--T 10000] [--batch 16] [--inputs 32] [--hidden 128] [--ks 100,40]

Interpreter: peak measured with tracemalloc (numpy allocations are traced) around one
``rc.interpret(rc.grad(...))``. ``--compiled`` (float32): see :func:`compiled_table`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

import rnnc as rc
from rnnc import t


def lstm(inputs: int, hidden: int, classes: int) -> rc.Model:
    """An LSTM cell written from its equations, with a per-step softmax loss."""
    m = rc.Model("lstm")
    x = m.input("x", inputs)
    y = m.input("y", (), dtype="int")
    h, c = m.signal("h", hidden), m.signal("c", hidden)
    hp = h[t - 1]

    def gate(name):
        return m.param(f"U{name}", (hidden, inputs)) @ x[t] + m.param(f"W{name}", (hidden, hidden)) @ hp \
            + m.param(f"b{name}", hidden)

    i, f, o, g = rc.sigmoid(gate("i")), rc.sigmoid(gate("f")), rc.sigmoid(gate("o")), rc.tanh(gate("g"))
    c[t] = f * c[t - 1] + i * g
    h[t] = o * rc.tanh(c[t])
    m.loss(rc.softmax_cross_entropy(m.param("V", (classes, hidden)) @ h[t], y[t]))
    return m


def measure(model, inputs, params, checkpoint):
    gm = rc.grad(model, checkpoint=checkpoint)
    tracemalloc.start()
    start = time.perf_counter()
    res = rc.interpret(gm, inputs, params)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return res, peak, seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=None, help="steps (default 1000; 10000 with --compiled)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--inputs", type=int, default=None, help="input features (default 16; 32 with --compiled)")
    ap.add_argument("--hidden", type=int, default=None, help="hidden units (default 64; 128 with --compiled)")
    ap.add_argument("--compiled", action="store_true", help="compiled rnnc vs PyTorch and JAX, float32")
    ap.add_argument("--ks", default="100,40", help="--compiled: checkpoint segment lengths")
    ap.add_argument("--repeats", type=int, default=3, help="--compiled: timed calls per variant (median)")
    ap.add_argument("--threads", type=int, default=1, help="--compiled: threads of every library")
    ap.add_argument("--variant", help=argparse.SUPPRESS)       # the child process of one --compiled variant
    args = ap.parse_args(argv)
    big = args.compiled or args.variant
    args.T = args.T or (10_000 if big else 1000)
    args.inputs = args.inputs or (32 if big else 16)
    args.hidden = args.hidden or (128 if big else 64)
    if args.variant:
        from bptt_memory_peers import measure_variant

        print(json.dumps(measure_variant(args, lstm)))
        return
    if args.compiled:
        compiled_table(args)
        return
    m = lstm(args.inputs, args.hidden, 4)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(args.T, args.batch, args.inputs)),
              "y": rng.integers(0, 4, size=(args.T, args.batch))}
    params = m.init_params(seed=0, dtype="float64")
    step_mb = args.batch * args.hidden * 8 / 1e6
    print(f"LSTM T={args.T} B={args.batch} I={args.inputs} H={args.hidden}, float64; one (B, H) step = "
          f"{step_mb * 1e3:.0f} kB, a (T, B, H) array = {step_mb * args.T:.1f} MB")
    print("| checkpoint | peak MB | seconds | gradients equal plain |")
    print("|---|---|---|---|")
    plain = None
    for ck in (None, 100, 32, 10):
        res, peak, secs = measure(m, inputs, params, ck)
        plain = plain or res
        same = all(np.array_equal(plain.grads[k], res.grads[k]) for k in params)
        print(f"| {ck or 'none'} | {peak / 1e6:.1f} | {secs:.2f} | {same} |")


def compiled_table(args) -> None:
    """One process per variant (``--variant``), so that peaks do not mix, and one markdown table.

    Each child builds the data, warms its library up on a short sequence (JIT compiles), then measures one
    ``loss_and_grad`` at ``T`` steps: the process's resident-set high-water mark above its resident set just
    before the call (``/proc/self/status`` VmHWM after resetting it through ``/proc/self/clear_refs``; inputs and
    params are allocated before and not counted), numpy's traced peak (tracemalloc: rnnc's buffers; torch and
    JAX allocate outside it), then the median time of ``--repeats`` further calls.
    """
    ks = [int(k) for k in args.ks.split(",") if k]
    variants = [(lib, k) for lib in ("rnnc", "torch", "jax") for k in [None] + ks]
    print(f"LSTM T={args.T} B={args.batch} I={args.inputs} H={args.hidden}, float32, per-step softmax loss "
          f"(10 classes), {args.threads} threads; a (T, B, H) float32 array = "
          f"{args.T * args.batch * args.hidden * 4 / 1e6:.1f} MB")
    print("| library | checkpoint | peak RSS MB | numpy traced MB | s per loss_and_grad | RSS / none | "
          "time / none | loss |")
    print("|---|---|---|---|---|---|---|---|")
    rows = {}
    for lib, k in variants:
        cmd = [sys.executable, __file__, "--variant", f"{lib}:{k or 0}", "--T", str(args.T), "--batch",
               str(args.batch), "--inputs", str(args.inputs), "--hidden", str(args.hidden), "--repeats",
               str(args.repeats), "--threads", str(args.threads)]
        run = subprocess.run(cmd, capture_output=True, text=True, env=_env(args.threads))
        if run.returncode:
            print(f"| {lib} | {k or 'none'} | failed: {run.stderr.strip().splitlines()[-1:]} |||||")
            continue
        r = rows[(lib, k)] = json.loads(run.stdout.strip().splitlines()[-1])
        base = rows.get((lib, None), r)
        print(f"| {lib} | {k or 'none'} | {r['rss_mb']:.1f} | {r['traced_mb']:.1f} | {r['seconds']:.3f} | "
              f"{r['rss_mb'] / base['rss_mb']:.3f} | {r['seconds'] / base['seconds']:.2f} | {r['loss']:.4f} |",
              flush=True)
    for k in ks:
        ours = rows.get(("rnnc", k))
        for peer in ("torch", "jax"):
            theirs = rows.get((peer, k))
            if ours and theirs:
                print(f"checkpoint {k}: rnnc / {peer}: peak RSS {ours['rss_mb'] / theirs['rss_mb']:.2f}x, "
                      f"time {ours['seconds'] / theirs['seconds']:.2f}x")


def _env(threads: int) -> dict:
    """The child's environment: this folder importable, and every library's thread pools at ``threads``."""
    here = os.path.dirname(os.path.abspath(__file__))
    n = str(threads)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "NUMBA_NUM_THREADS": n}
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


if __name__ == "__main__":
    main()
