"""What the checked boundary costs (:mod:`rnnc.interpret.boundary`) against a compiled training step.

Run: ``python benchmarks/boundary_cost.py [--repeat N]``. float32, 2 threads (set before numpy loads). For each
model and shape it times, in one process and taking turns, ``f.loss_and_grad(inputs, params)`` (the training
step, boundary included) and the boundary's own work on the same call: the size and index checks every call
runs (``check_sizes`` + ``check_binding``), the same with the params checked for NaN / Inf (what the Trainer
runs on every step by default: it checks its data set for them once, in ``fit``), and with
``check_finite=True`` (every float input and param, on every call). Prints median µs and the ratio to the
step. Models: the Elman and LSTM cells of :mod:`benchmarks.cells` (MSE on float targets: no index inputs), and
the LSTM with a softmax cross-entropy on integer labels and per-sample lengths (two index inputs: the labels
and ``x_lengths``).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import rnnc as rc  # noqa: E402
from benchmarks.cells import CELLS  # noqa: E402
from rnnc import t  # noqa: E402
from rnnc.interpret.boundary import check_binding, check_sizes  # noqa: E402

#: (label, model builder, T, B, I, H): the benchmark shapes of benchmarks/rnn_cells.py that train in milliseconds
ROWS = [("rnn", "rnn", 200, 16, 32, 64), ("lstm", "lstm", 200, 16, 32, 64), ("lstm", "lstm", 50, 32, 64, 128),
        ("lstm + CE labels + lengths", "lstm_ce", 200, 16, 32, 64)]
CLASSES = 10


def lstm_ce(I: int, H: int) -> rc.Model:
    """The benchmark LSTM read out to ``CLASSES`` logits per step, with a cross-entropy on integer labels and
    per-sample lengths."""
    m = rc.Model("bench_lstm_ce")
    x = m.input("x", I, lengths=True)
    y = m.input("y", (), dtype="int")
    P = {g: (m.param(f"U{g}", (H, I)), m.param(f"W{g}", (H, H)), m.param(f"b{g}", H)) for g in "ifgo"}
    V, c0 = m.param("V", (CLASSES, H)), m.param("c0", CLASSES)
    h, c = m.signal("h", H), m.signal("c", H)

    def pre(g):
        U, W, b = P[g]
        return U @ x[t] + W @ h[t - 1] + b
    i, f, o = rc.sigmoid(pre("i")), rc.sigmoid(pre("f")), rc.sigmoid(pre("o"))
    c[t] = f * c[t - 1] + i * rc.tanh(pre("g"))
    h[t] = o * rc.tanh(c[t])
    m.output("out", h[t])
    m.loss(rc.softmax_cross_entropy(V @ h[t] + c0, y[t]))
    return m


def setup(kind: str, T: int, B: int, I: int, H: int):
    m = lstm_ce(I, H) if kind == "lstm_ce" else CELLS[kind](I, H)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(T, B, I)).astype(np.float32)}
    if kind == "lstm_ce":
        inputs["y"] = rng.integers(0, CLASSES, size=(T, B))
        inputs["x_lengths"] = rng.integers(1, T + 1, size=B)
    else:
        inputs["y"] = rng.normal(size=(T, B, H)).astype(np.float32)
    f = rc.compile(m, dtype="float32")
    params = m.init_params(0, "float32")
    return f, inputs, params


def median_us(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def row(kind, T, B, I, H, repeat: int, rounds: int) -> dict:
    f, inputs, params = setup(kind, T, B, I, H)
    f.loss_and_grad(inputs, params)                     # compile / load
    k = f.kernel("grad")
    b = k.bind(inputs, params)
    calls = {
        "step": lambda: f.loss_and_grad(inputs, params),
        "checks": lambda: (check_sizes(None, None), check_binding(k.source_graph, b, False)),
        "checks_params": lambda: (check_sizes(None, None), check_binding(k.source_graph, b, "params")),
        "checks_finite": lambda: (check_sizes(None, None), check_binding(k.source_graph, b, True)),
    }
    out = {name: [] for name in calls}
    for _ in range(rounds):                             # take turns, so a slow spell hits all three
        for name, fn in calls.items():
            out[name].append(median_us(fn, repeat if name == "step" else 20 * repeat))
    return {name: float(np.median(v)) for name, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="step calls per round (checks: 20x as many)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"{'model':28s} {'T':>4s} {'B':>4s} {'H':>4s} {'step us':>8s} | {'checks us':>9s} {'ratio':>6s} | "
          f"{'+params':>8s} {'ratio':>6s} | {'+all':>7s} {'ratio':>6s}")
    for label, kind, T, B, I, H in ROWS:
        r = row(kind, T, B, I, H, args.repeat, args.rounds)
        cols = " | ".join(f"{r[k]:{w}.1f} {r[k] / r['step']:6.2%}"
                          for k, w in (("checks", 9), ("checks_params", 8), ("checks_finite", 7)))
        print(f"{label:28s} {T:4d} {B:4d} {H:4d} {r['step']:8.0f} | {cols}", flush=True)


if __name__ == "__main__":
    main()
