"""Training throughput of the Fashion-MNIST ReSeg classifier: rnnc (compiled Numba CPU kernels, or the numpy
interpreter) vs the same network written in PyTorch (CPU, ``torch.set_num_threads(threads)``).

Same batch (random images, fixed seed), same optimizer (momentum SGD 0.9, weight decay 5e-4), one run: each side
does ``warmup`` steps, then the two alternate ``rounds`` times, ``steps`` timed steps (forward, backward, update)
per side per round, so both see the same machine load. Prints images/s from the median step time of each side
(the minimum too: on a shared machine it is the least disturbed step), the ratio, and the load average; then
the products of one step (``rc.flops``: convolutions and matrix products, the zero padding's excluded), the time
they take at the machine's measured GEMM rate (numpy float32 1024³, same threads) and at ``threads`` times one
core's, and the ceiling that sets: PyTorch's median step over the latter, the most any implementation could be
ahead of PyTorch here.

    python benchmarks/flagship.py [--engine compiled] [--batch 128] [--steps 10] [--threads 2] [--rnnc-threads 1]
                                  [--widths 8,16,32,64] [--hidden 64,128] [--seed-network]

``--seed-network`` times the lecture's seed network at its full size instead (3 x 128 x 128, 2 classes, batch 32).

PyTorch is an optional peer: ``pip install torch==2.13.0``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import reseg_classifier as R  # noqa: E402

import rnnc as rc  # noqa: E402
from benchmarks.machine import core_bound, gemm_peak  # noqa: E402
from rnnc.train import GradientDescentMomentum  # noqa: E402


def torch_model(widths=R.FASHION_WIDTHS, hidden=R.FASHION_HIDDEN, classes=10, channels=1):
    """The Fashion ReSeg network in PyTorch, layer for layer (SpatialRNN: 2x2 patches in (c, row, col) order,
    a bidirectional tanh RNN down/up each column of the patch grid, then right/left along each row)."""
    import torch
    from torch import nn

    class SpatialRNN(nn.Module):
        def __init__(self, c, u):
            super().__init__()
            self.v = nn.RNN(4 * c, u, nonlinearity="tanh", bidirectional=True)
            self.h = nn.RNN(2 * u, u, nonlinearity="tanh", bidirectional=True)

        def forward(self, x):
            n, c, hh, ww = x.shape
            i, j = hh // 2, ww // 2
            p = x.reshape(n, c, i, 2, j, 2).permute(2, 4, 0, 1, 3, 5).reshape(i, j * n, 4 * c)
            o = self.v(p)[0].reshape(i, j, n, -1)                    # sweep along i for each column j
            o = self.h(o.permute(1, 0, 2, 3).reshape(j, i * n, -1))[0].reshape(j, i, n, -1)
            return o.permute(2, 3, 1, 0)                             # (n, 2u, i, j)

    layers, c = [nn.BatchNorm2d(channels)], channels
    for k, w in enumerate(widths):
        layers += [nn.Conv2d(c, w, 3, 1, 2, 2), nn.ReLU(), nn.BatchNorm2d(w)]
        if k < len(widths) - 1:
            layers.append(nn.MaxPool2d(3, 2, 1))
        c = w
    layers += [SpatialRNN(c, hidden[0]), nn.BatchNorm2d(2 * hidden[0]), SpatialRNN(2 * hidden[0], hidden[1]),
               nn.BatchNorm2d(2 * hidden[1]), nn.Conv2d(2 * hidden[1], classes, 1, 1, 1), nn.ReLU(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return torch.nn.Sequential(*layers)


def copy_rnnc_params(model, params: dict) -> None:
    """Load rnnc's params (names ``bnK_gamma``, ``convK_W``, ``rnnK_U/W/b`` in build order) into the PyTorch
    model; each RNN's second bias ``b_hh`` is set to zero (rnnc's Elman cell has one bias)."""
    import torch

    count = {"bn": 0, "conv": 0, "rnn": 0}

    def take(kind):
        count[kind] += 1
        return f"{kind}{count[kind]}"

    def put(t, a):
        t.data.copy_(torch.from_numpy(np.asarray(a)).reshape(t.shape).to(t.dtype))

    with torch.no_grad():
        for mod in model:
            if isinstance(mod, torch.nn.BatchNorm2d):
                k = take("bn")
                put(mod.weight, params[f"{k}_gamma"]), put(mod.bias, params[f"{k}_beta"])
            elif isinstance(mod, torch.nn.Conv2d):
                k = take("conv")
                put(mod.weight, params[f"{k}_W"]), put(mod.bias, params[f"{k}_b"])
            elif hasattr(mod, "v"):
                for rnn in (mod.v, mod.h):
                    for suffix in ("", "_reverse"):
                        k = take("rnn")
                        put(getattr(rnn, f"weight_ih_l0{suffix}"), params[f"{k}_U"])
                        put(getattr(rnn, f"weight_hh_l0{suffix}"), params[f"{k}_W"])
                        put(getattr(rnn, f"bias_ih_l0{suffix}"), params[f"{k}_b"])
                        getattr(rnn, f"bias_hh_l0{suffix}").zero_()


def torch_step(x, y, threads, widths=R.FASHION_WIDTHS, hidden=R.FASHION_HIDDEN, seed=False):
    """One training step of the PyTorch twin, as a closure (``seed``: the seed network, 3 x 128 x 128, 2
    classes, inputs divided by 128 as its ``Normalizer`` does)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_model(widths, hidden, 2, 3) if seed else torch_model(widths, hidden)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    xt, yt = torch.from_numpy(x / (128.0 if seed else 255.0)).float(), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()
    return step


def _classifier(widths, hidden, seed):
    return R.build_model((3, 128, 128), 2, widths, hidden) if seed else R.fashion_reseg(widths, hidden)


def step_flops(batch: int, widths=R.FASHION_WIDTHS, hidden=R.FASHION_HIDDEN, seed=False) -> rc.FlopCount:
    """The products of one training step (the gradient model's, for ``batch`` images)."""
    return rc.flops(rc.grad(_classifier(widths, hidden, seed).build(train=True).model), batch=batch)


def rnnc_step(x, y, engine_kind: str = "compiled", threads: int | None = None, widths=R.FASHION_WIDTHS,
              hidden=R.FASHION_HIDDEN, seed=False):
    """One training step of the rnnc model (``engine_kind`` "compiled" or "interpret"), as a closure; and the
    engine's name. ``threads``: threads of the compiled kernel (default: rnnc's choice); ``seed``: the seed
    network (``build_model()``: 3 x 128 x 128, 2 classes)."""
    from rnnc.train.engine import CompiledEngine, InterpretEngine

    net = _classifier(widths, hidden, seed).build(train=True)
    engine = CompiledEngine(net.model, "float32", threads=threads) if engine_kind == "compiled" else \
        InterpretEngine(net.model, "float32")
    params = net.model.init_params(0, "float32")
    opt = GradientDescentMomentum(0.05, 0.9, 5e-4)
    batch = {"x": x.astype(np.float32), "y": y}

    def step():
        opt.step(params, engine.loss_and_grad(batch, params).grads)
    return step, engine.name


def timed(step, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def run(x, y, steps, warmup, rounds, engine_kind, threads, rnnc_threads, torch_too=True, widths=R.FASHION_WIDTHS,
        hidden=R.FASHION_HIDDEN, seed=False) -> dict:
    """Per-step times of both sides, alternating ``rounds`` times (``steps`` steps per side per round)."""
    ours, how = rnnc_step(x, y, engine_kind, rnnc_threads, widths, hidden, seed)
    theirs = torch_step(x, y, threads, widths, hidden, seed) if torch_too else None
    timed(ours, warmup)
    if theirs:
        timed(theirs, warmup)
    t_ours, t_theirs = [], []
    for _ in range(rounds):
        t_ours += timed(ours, steps)
        if theirs:
            t_theirs += timed(theirs, steps)
    return {"engine": how, "rnnc": t_ours, "torch": t_theirs}


def _rate(batch, ts) -> tuple[float, float]:
    return batch / float(np.median(ts)), batch / float(np.min(ts))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None, help="default 128; 32 with --seed-network")
    p.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two sides")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2,
                   help="threads of each side: PyTorch's, rnnc's Numba threads (parallel image kernels), BLAS limit")
    p.add_argument("--rnnc-threads", type=int, default=0,
                   help="threads of rnnc's compiled kernel (rc.compile's threads=; default 0: rnnc's own choice, "
                        "as `reseg_classifier.py train` runs it: every Numba thread, one BLAS thread each)")
    p.add_argument("--engine", choices=("interpret", "compiled"), default="compiled",
                   help="rnnc's engine: the Numba CPU kernels (compiled once, cached) or the numpy interpreter")
    p.add_argument("--widths", type=R.int_tuple(4), default=R.FASHION_WIDTHS,
                   help="conv widths (default 8,16,32,64; the 92%% run: 16,32,64,128)")
    p.add_argument("--hidden", type=R.int_tuple(2), default=R.FASHION_HIDDEN, help="SpatialRNN widths (default 64,128)")
    p.add_argument("--seed-network", action="store_true",
                   help="the lecture's seed network at full size instead (3 x 128 x 128 images, 2 classes, widths "
                        "32,64,128,256, hidden 256,512; --widths / --hidden are ignored)")
    a = p.parse_args(argv)
    if a.seed_network:
        a.widths, a.hidden = R.SEED_WIDTHS, R.SEED_HIDDEN
    a.batch = a.batch or (32 if a.seed_network else 128)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
    except ImportError:
        pass
    import numba

    if a.threads < numba.config.NUMBA_NUM_THREADS:      # rnnc's parallel image kernels; left alone otherwise:
        numba.set_num_threads(a.threads)                # starting Numba's OpenMP pool before torch's slowed torch
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch not installed (pip install torch==2.13.0): rnnc only")
    rng = np.random.default_rng(0)
    shape, classes = ((3, 128, 128), 2) if a.seed_network else ((1, 28, 28), 10)
    x = rng.integers(0, 256, size=(a.batch, *shape)).astype(np.float64)
    y = rng.integers(0, classes, size=a.batch)
    load0 = os.getloadavg()[0]
    # the compiled kernel sets Numba's thread count on every call (threads= or NUMBA_NUM_THREADS): a --threads
    # below the machine's limits rnnc's kernel too, unless --rnnc-threads says otherwise
    rnnc_threads = a.rnnc_threads or (a.threads if a.threads < numba.config.NUMBA_NUM_THREADS else None)
    r = run(x, y, a.steps, a.warmup, a.rounds, a.engine, a.threads, rnnc_threads, torch is not None,
            a.widths, a.hidden, a.seed_network)
    n = len(r["rnnc"])
    med, best = _rate(a.batch, r["rnnc"])
    threads = rnnc_threads or "default"
    print(f"rnnc ({r['engine']}, float32, threads {threads}): {med:8.1f} images/s median, {best:8.1f} best "
          f"(batch {a.batch}, {n} steps; widths {','.join(map(str, a.widths))}, hidden {','.join(map(str, a.hidden))})")
    if torch is not None:
        tmed, tbest = _rate(a.batch, r["torch"])
        print(f"PyTorch {torch.__version__} CPU ({a.threads} threads):  {tmed:8.1f} images/s median, {tbest:8.1f} best")
        print(f"ratio rnnc / PyTorch: {med / tmed:.2f} (median steps), {best / tbest:.2f} (best steps)")
    f, peak, bound = step_flops(a.batch, a.widths, a.hidden, a.seed_network), gemm_peak(), core_bound(a.threads)
    step_ms = a.batch / med * 1e3
    parts = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in f.by_op.items())
    print(f"products of one step: {f.total / 1e9:.2f} GFLOP ({parts}): at the measured GEMM peak ({peak:.1f} "
          f"GFLOP/s, {a.threads} threads) {f.total / peak / 1e6:.1f} ms, {100 * f.total / peak / 1e6 / step_ms:.0f}% "
          f"of rnnc's median step; at {a.threads} x one core's ({bound:.1f} GFLOP/s) {f.total / bound / 1e6:.1f} ms")
    if torch is not None:
        print(f"ceiling: PyTorch's median step / the products' time at {a.threads} x one core's rate = "
              f"{a.batch / tmed * 1e3 / (f.total / bound / 1e6):.2f}x")
    print(f"load average (1 min) {load0:.2f} before, {os.getloadavg()[0]:.2f} after; {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
