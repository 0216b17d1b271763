"""Peak memory of the reference interpreter computing LSTM gradients, with and without checkpointing.

    python benchmarks/bptt_memory.py [--T 1000] [--batch 16] [--hidden 64]

Peak is measured with tracemalloc (numpy allocations are traced) around one ``rc.interpret(rc.grad(...))``.
"""
from __future__ import annotations

import argparse
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
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--inputs", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
