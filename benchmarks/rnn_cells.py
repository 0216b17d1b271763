"""Training-step and inference timings of Elman / LSTM / GRU: rnnc vs PyTorch vs JAX vs the interpreter.

Run: ``python benchmarks/rnn_cells.py [--quick] [--repeat N] [--rounds R] [--compile-times]``. Peers that are
not installed are skipped with a message. float32, 2 threads (set before numpy loads). The engines take turns
(``--rounds``); prints each one's median ms per call, the median over rounds of the ratio fastest peer / rnnc
(and its range), achieved GFLOP/s and the machine's measured float32 GEMM peak, and the ceiling: the fastest
peer's time over the time the products (``rc.flops``) take at two cores' bound (twice one core's best product),
the most any implementation could be ahead of the peer here.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import rnnc as rc  # noqa: E402
from benchmarks.cells import CELLS  # noqa: E402
from benchmarks.machine import core_bound, cpu_name, gemm_peak  # noqa: E402
from benchmarks.peers import make_jax, make_torch, make_torch_builtin  # noqa: E402

SHAPES = [(50, 32, 64, 128), (100, 64, 128, 256), (200, 16, 32, 64), (50, 128, 256, 512)]


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def flops(cell, T, B, I, H, train: bool) -> float:
    """Matrix-product flops (``rc.flops``): forward 2·T·B·G·H·(I+H); a training step with dL/dx three times that."""
    m = CELLS[cell](I, H)
    return float(rc.flops(rc.grad(m, wrt=[*m.graph.params, "x"]) if train else m, {"t": T}, B).total)


def rnnc_pair(cell, T, B, I, H):
    m = CELLS[cell](I, H)
    f = rc.compile(m, dtype="float32", wrt=[*m.graph.params, "x"])     # dL/dx too, as the peers compute it
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(T, B, I)).astype(np.float32), "y": rng.normal(size=(T, B, H)).astype(np.float32)}
    params = m.init_params(0, "float32")
    x_only = {"x": inputs["x"]}
    return (lambda: f.loss_and_grad(inputs, params)), (lambda: f.forward(x_only, params)), m, inputs, params


def time_row(cell, shape, repeat, peers, rounds=1):
    """Median ms of training and inference calls for rnnc and each peer. With ``rounds`` > 1 the engines take
    turns (rnnc, then each peer, ``repeat`` calls each, the order rotating every round), so a slow spell of
    this shared machine hits all of them; each engine's time is its median over the rounds, and
    ``row["ratios"]`` holds the per-round ratios fastest peer / rnnc (train, infer)."""
    T, B, I, H = shape
    train, infer, m, inputs, params = rnnc_pair(cell, T, B, I, H)
    engines = {"rnnc": (train, infer)}
    for name, make in peers.items():
        try:
            engines[name] = make(cell, T, B, I, H)
        except ImportError as e:
            print(f"  ({name} skipped: {e})")
    names = list(engines)
    per_round = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            tr, inf = engines[name]
            per_round[name].append((median_ms(tr, repeat), median_ms(inf, repeat)))
    row = {n: tuple(float(np.median([v[k] for v in vals])) for k in (0, 1)) for n, vals in per_round.items()}
    row.update({n: None for n in peers if n not in engines})
    peer_names = [n for n in names if n != "rnnc"]
    if peer_names:
        row["ratios"] = [tuple(min(per_round[n][r][k] for n in peer_names) / per_round["rnnc"][r][k] for k in (0, 1))
                         for r in range(rounds)]
    if T * B * H <= 50 * 32 * 128:
        gm = rc.grad(m)
        row["interp"] = (median_ms(lambda: rc.interpret(gm, inputs, params), 1),
                         median_ms(lambda: rc.interpret(m, {"x": inputs["x"]}, params), 1))
    return row


def fmt(row, cell, shape, peak, bound=None):
    T, B, I, H = shape
    out = []
    for k, mode in enumerate(("train", "infer")):
        ours = row["rnnc"][k]
        gf = flops(cell, T, B, I, H, mode == "train") / ours / 1e6
        parts = [f"{n} {v[k]:.2f}" for n, v in row.items() if v and n != "ratios"]
        ratios = [r[k] for r in row.get("ratios", [])]
        ratio = ""
        if ratios:
            spread = f" ({min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds)" if len(ratios) > 1 else ""
            fastest = min(v[k] for n, v in row.items() if v and n not in ("rnnc", "ratios", "interp"))
            at_bound = gf * ours / (bound or peak)             # ms the products take at the bound
            ratio = f" | peer/rnnc {float(np.median(ratios)):.2f}x{spread}, ceiling {fastest / at_bound:.2f}x"
        out.append(f"{cell:4s} {mode:5s} T{T} B{B} I{I} H{H}: " + " · ".join(parts)
                   + f" ms{ratio} | rnnc {gf:.1f} GFLOP/s ({100 * gf / peak:.0f}% of peak)")
    return out


COMPILE_SNIPPET = """
import os, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import numpy as np, rnnc as rc
from benchmarks.cells import CELLS
m = CELLS["lstm"](64, 128)
f = rc.compile(m, wrt=[*m.graph.params, "x"])
T = {T}
x = np.zeros((T, 2, 64), np.float32); y = np.zeros((T, 2, 128), np.float32)
p = m.init_params(0, "float32")  # outside the timing: its QR (orthogonal init) is no compile time
t1 = time.perf_counter()
f.loss_and_grad({{"x": x, "y": y}}, p)
t2 = time.perf_counter()
print(f"{{t2 - t1:.3f}} {{t2 - t0:.3f}} {{f.stats['grad']['cache_hit']}} {{f.stats['grad']['render_s']:.3f}}")
"""


# the floor under a cached load: a new process importing Numba and loading one cached one-line function (numpy
# is imported first, as rnnc is in COMPILE_SNIPPET)
NUMBA_FLOOR_SNIPPET = """
import time
import numpy
t0 = time.perf_counter()
import numba
@numba.njit(cache=True)
def f(x):
    return x + 1
f(1)
print(f"{time.perf_counter() - t0:.3f}")
"""


def compile_times():
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "floor.py")
        with open(script, "w") as fh:
            fh.write(NUMBA_FLOOR_SNIPPET)
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(d, "cache"))
        runs = [subprocess.run([sys.executable, script], env=env, capture_output=True, text=True).stdout.strip()
                for _ in range(4)]
        print(f"Numba alone, new process, import + one cached one-line function: {' / '.join(runs[1:])} s "
              f"(compiled in the first of four runs, {runs[0]} s)")
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, RNNC_CACHE_DIR=d)
        for label, T in (("cold, T=10", 10), ("cached, new process, T=10", 10), ("cached, T=10,000", 10000)):
            out = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET.format(root=root, T=T)], env=env,
                                 capture_output=True, text=True).stdout.split()
            print(f"LSTM training kernel {label}: build+first call {out[0]} s (process incl. imports {out[1]} s, "
                  f"module cache hit {out[2]}, to imported module {out[3]} s)")
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, RNNC_CACHE_DIR=d)
        out = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET.format(root=root, T=10000)], env=env,
                             capture_output=True, text=True).stdout.split()
        print(f"LSTM training kernel cold, T=10,000: build+first call {out[0]} s (the module source does not "
              f"depend on T)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=10, help="calls per engine per round (median)")
    ap.add_argument("--rounds", type=int, default=3, help="turns the engines take, alternating")
    ap.add_argument("--quick", action="store_true", help="first shape only")
    ap.add_argument("--cells", default="rnn,lstm,gru")
    ap.add_argument("--compile-times", action="store_true")
    args = ap.parse_args(argv)
    peak, bound = gemm_peak(), core_bound(2)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"float32 GEMM peak (numpy 1024^3 matmul, 2 threads, best of 20): {peak:.1f} GFLOP/s; 2 x one core's: "
          f"{bound:.1f} GFLOP/s (the ceiling: the fastest peer's time over the products' time at this rate)")
    peers = {}
    for name, make in (("torch", make_torch), ("torch_nn", make_torch_builtin), ("jax", make_jax)):
        try:
            __import__(name.split("_")[0])
            peers[name] = make
        except ImportError:
            print(f"{name} not installed: skipped")
    for cell in args.cells.split(","):
        for shape in SHAPES[:1] if args.quick else SHAPES:
            for line in fmt(time_row(cell, shape, args.repeat, peers, args.rounds), cell, shape, peak, bound):
                print(line, flush=True)
    if args.compile_times:
        compile_times()


if __name__ == "__main__":
    main()
