"""rnnc CUDA vs PyTorch on the GPU: one training step (forward + backward, gradients of every weight and bias).

Columns: rnnc ``target="cuda"`` with the automatic scan strategy (and which it picked), rnnc with each strategy
(``loop``, ``persistent``: one block, ``grid``: a cooperative multi-block launch, for batches up to 64)
forced, PyTorch cuDNN (``nn.RNN``/``nn.LSTM``/``nn.GRU``) and PyTorch with the same cell written in Python
(``torch.autograd`` over a Python loop: what users get for a custom cell). float32, median of ``--reps``.

    python benchmarks/cuda_bench.py                  # on a machine with an NVIDIA GPU (scripts/gpu.sh)
    python benchmarks/cuda_bench.py --smoke          # tiny shapes, any machine (the CUDA simulator, torch CPU)

Shapes (T, B, I, H): the CPU benchmark's four, plus batch 4 with H = 1024 (the persistent-kernel case).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

SHAPES = [(50, 32, 64, 128), (100, 64, 128, 256), (200, 16, 32, 64), (50, 128, 256, 512), (100, 4, 256, 1024)]
SMOKE_SHAPES = [(3, 2, 3, 4)]
CELLS = ("rnn", "lstm", "gru")


# ----------------------------------------------------------------------------- rnnc models
def rnnc_model(cell: str, I: int, H: int):
    """The cell in rnnc's DSL with a per-step MSE loss on h (targets y)."""
    import rnnc as rc
    from rnnc import t

    m = rc.Model(f"bench_{cell}")
    x, y = m.input("x", I), m.input("y", H)
    h = m.signal("h", H)

    def gate(name, inner=None):
        U, W, b = m.param(f"U{name}", (H, I)), m.param(f"W{name}", (H, H)), m.param(f"b{name}", H)
        return U @ x[t] + W @ (inner if inner is not None else h[t - 1]) + b

    if cell == "rnn":
        h[t] = rc.tanh(gate(""))
    elif cell == "lstm":
        c = m.signal("c", H)
        f, i, o = rc.sigmoid(gate("f")), rc.sigmoid(gate("i")), rc.sigmoid(gate("o"))
        c[t] = f * c[t - 1] + i * rc.tanh(gate("g"))
        h[t] = o * rc.tanh(c[t])
    else:
        z, r = rc.sigmoid(gate("z")), rc.sigmoid(gate("r"))
        h[t] = (1.0 - z) * h[t - 1] + z * rc.tanh(gate("n", r * h[t - 1]))
    m.loss(rc.mse(h[t], y[t]))
    return m


def time_rnnc(cell, T, B, I, H, scan, reps):
    from numba import cuda

    from rnnc.runtime.targets import compile as rc_compile

    m = rnnc_model(cell, I, H)
    rng = np.random.default_rng(0)
    f = rc_compile(m, target="cuda", dtype="float32", scan=scan)
    params = f.to_device({k: v * 0.1 for k, v in m.init_params(seed=0, dtype="float32").items()})
    inputs = {"x": cuda.to_device(rng.normal(size=(T, B, I)).astype(np.float32)),
              "y": cuda.to_device(rng.normal(size=(T, B, H)).astype(np.float32))}
    t0 = time.perf_counter()
    f.loss_and_grad(inputs, params)                   # compile (or load from the cache)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        cuda.synchronize()
        t0 = time.perf_counter()
        f.loss_and_grad(inputs, params)
        cuda.synchronize()
        times.append(time.perf_counter() - t0)
    picked = "/".join(sorted(set(f.stats["grad"]["scan_strategy"])))
    return statistics.median(times) * 1e3, picked, compile_s


# ----------------------------------------------------------------------------- PyTorch
def _torch_cell(cell, I, H, dev):
    import torch

    n = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    Wx = torch.nn.Parameter(torch.randn(n * H, I, device=dev) * 0.1)
    Wh = torch.nn.Parameter(torch.randn(n * H, H, device=dev) * 0.1)
    b = torch.nn.Parameter(torch.zeros(n * H, device=dev))
    params = [Wx, Wh, b]

    def run(x):
        T, B, _ = x.shape
        h = torch.zeros(B, H, device=dev)
        c = torch.zeros(B, H, device=dev)
        xs = x @ Wx.T                                  # hoisted input product, as a careful user writes it
        out = []
        for k in range(T):
            if cell == "rnn":
                h = torch.tanh(xs[k] + h @ Wh.T + b)
            elif cell == "lstm":
                f, i, o, g = (xs[k] + h @ Wh.T + b).chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                xz, xr, xn = (xs[k] + b).chunk(3, -1)
                hz, hr, hn = (h @ Wh.T).chunk(3, -1)
                z, r = torch.sigmoid(xz + hz), torch.sigmoid(xr + hr)
                h = (1 - z) * h + z * torch.tanh(xn + r * hn)
            out.append(h)
        return torch.stack(out)
    return run, params


def time_torch(cell, T, B, I, H, custom, reps, dev):
    import torch

    torch.manual_seed(0)
    if custom:
        run, params = _torch_cell(cell, I, H, dev)
    else:
        mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H).to(dev)
        run, params = (lambda x: mod(x)[0]), list(mod.parameters())
    x = torch.randn(T, B, I, device=dev)
    y = torch.randn(T, B, H, device=dev)

    def step():
        for p in params:
            p.grad = None
        loss = ((run(x) - y) ** 2).mean(-1).sum() / B
        loss.backward()

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()
    step()
    sync()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


# ----------------------------------------------------------------------------- table
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes; runs in the simulator / on torch CPU")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--cells", default=",".join(CELLS))
    args = ap.parse_args(argv)
    from numba import cuda

    sim = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    if not sim and not cuda.is_available():
        print("no CUDA GPU here: run on a GPU machine (bash scripts/gpu.sh) or use --smoke with "
              "NUMBA_ENABLE_CUDASIM=1", file=sys.stderr)
        return 2
    try:
        import torch
        dev = "cuda" if torch.cuda.is_available() else ("cpu" if args.smoke else None)
    except ImportError:
        torch, dev = None, None
    shapes, reps = (SMOKE_SHAPES, 2) if args.smoke else (SHAPES, args.reps)
    gpu = "CUDA simulator" if sim else cuda.get_current_device().name
    gpu = gpu.decode() if isinstance(gpu, bytes) else gpu
    print(f"# rnnc CUDA training step, float32, median of {reps} (ms); GPU: {gpu}; torch: "
          f"{torch.__version__ + ' on ' + dev if dev else 'not available'}\n")
    print("| cell | T B I H | rnnc auto (picked) | rnnc loop | rnnc persistent | rnnc grid | cuDNN | "
          "torch Python cell | vs cuDNN | vs Python cell | rnnc compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        for T, B, I, H in shapes:
            auto, picked, comp = time_rnnc(cell, T, B, I, H, "auto", reps)
            loop = time_rnnc(cell, T, B, I, H, "loop", reps)[0]
            pers = time_rnnc(cell, T, B, I, H, "persistent", reps)[0] if B * H <= 8192 else float("nan")
            grid = time_rnnc(cell, T, B, I, H, "grid", reps)[0] if B <= 64 else float("nan")
            best = min(t for t in (auto, loop, pers, grid) if t == t)
            cudnn = time_torch(cell, T, B, I, H, False, reps, dev) if dev else float("nan")
            pycell = time_torch(cell, T, B, I, H, True, reps, dev) if dev else float("nan")
            print(f"| {cell} | {T} {B} {I} {H} | {auto:.2f} ({picked}) | {loop:.2f} | {pers:.2f} | {grid:.2f} | "
                  f"{cudnn:.2f} | "
                  f"{pycell:.2f} | {best / cudnn:.2f}× | {best / pycell:.2f}× | {comp:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
