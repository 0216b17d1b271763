"""Training throughput of the Fashion-MNIST ReSeg classifier: rnnc (numpy interpreter, or compiled when the CPU
backend covers its ops) vs the same network written in PyTorch (CPU, ``torch.set_num_threads(threads)``).

Same batch (random images, fixed seed), same optimizer (momentum SGD 0.9, weight decay 5e-4), one run each:
``warmup`` steps, then ``steps`` timed steps (forward, backward, update). Prints images/s and the ratio.

    python benchmarks/flagship.py [--batch 128] [--steps 10] [--threads 2]

PyTorch is an optional peer: ``pip install torch==2.13.0``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import reseg_classifier as R  # noqa: E402

from rnnc.train import GradientDescentMomentum  # noqa: E402


def torch_model(widths=R.FASHION_WIDTHS, hidden=R.FASHION_HIDDEN, classes=10):
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

    layers, c = [nn.BatchNorm2d(1)], 1
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
    """Load rnnc's params (names ``bnK_gamma``, ``convK_W``, ``rnnK_W/U/b`` in build order) into the PyTorch
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
                        put(getattr(rnn, f"weight_ih_l0{suffix}"), params[f"{k}_W"])
                        put(getattr(rnn, f"weight_hh_l0{suffix}"), params[f"{k}_U"])
                        put(getattr(rnn, f"bias_ih_l0{suffix}"), params[f"{k}_b"])
                        getattr(rnn, f"bias_hh_l0{suffix}").zero_()


def bench_torch(x, y, steps, warmup, threads) -> float:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    xt, yt = torch.from_numpy(x / 255.0).float(), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return len(y) * steps / (time.perf_counter() - t0)


def bench_rnnc(x, y, steps, warmup, engine_kind: str = "interpret") -> tuple[float, str]:
    clf = R.fashion_reseg()
    net = clf.build(train=True)
    if engine_kind == "compiled":
        from rnnc.train.engine import make_engine

        engine = make_engine(net.model, "compiled", "float32")
        engine.name = "compiled"
    else:
        engine = R.CachedEngine(net.model)
    params = net.model.init_params(0, "float32")
    opt = GradientDescentMomentum(0.05, 0.9, 5e-4)
    batch = {"x": x.astype(np.float32), "y": y}

    def step():
        opt.step(params, engine.loss_and_grad(batch, params).grads)

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return len(y) * steps / (time.perf_counter() - t0), engine.name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--engine", choices=("interpret", "compiled"), default="interpret",
                   help="rnnc's engine: the numpy interpreter or the Numba CPU kernels (compiled once, cached)")
    a = p.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(a.batch, 1, 28, 28)).astype(np.float64)
    y = rng.integers(0, 10, size=a.batch)
    ours, how = bench_rnnc(x, y, a.steps, a.warmup, a.engine)
    print(f"rnnc ({how}, float32): {ours:8.1f} images/s  (batch {a.batch}, {a.steps} steps)")
    try:
        import torch
    except ImportError:
        print("PyTorch not installed (pip install torch==2.13.0): no comparison")
        return 0
    theirs = bench_torch(x, y, a.steps, a.warmup, a.threads)
    print(f"PyTorch {torch.__version__} CPU ({a.threads} threads): {theirs:8.1f} images/s")
    print(f"ratio rnnc / PyTorch: {ours / theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
