"""Training throughput of the captioning attention model (examples/captioning.py): rnnc compiled
(``f.loss_and_grad``) against the same network in PyTorch (CPU autograd, 2 threads), canvases per second.

Same layers and sizes on both sides: three 3x3 conv + ReLU + max-pool layers (1 x 56 x 56 -> 32 x 4 x 4), the
additive attention ``e = v . tanh(F W_f + W_h h)``, softmax over the 16 positions, ``z = alpha . F``, an LSTM
decoder of 64 units on ``[E[w]; z]``, logits from ``[h; z]``, cross-entropy summed over the 5 tokens, mean
over the batch. Weights are random (timing only); each side runs the forward pass and every gradient, not the
optimizer. Rounds alternate between the two; the medians are printed and their ratio.

    python benchmarks/captioning.py [--batch 32] [--rounds 5] [--steps 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import captioning as cap  # noqa: E402


def torch_step(batch: dict, hidden: int = 64, embed: int = 16, att: int = 32):
    """A training step (forward + backward) of the attention model in PyTorch."""
    import torch
    from torch import nn as tnn

    torch.set_num_threads(2)
    torch.manual_seed(0)
    V, C = len(cap.VOCAB), 32
    enc = tnn.Sequential(tnn.Conv2d(1, 8, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2, 2),
                         tnn.Conv2d(8, 16, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2, 2),
                         tnn.Conv2d(16, C, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(4, 4, padding=1))
    emb, cell = tnn.Embedding(V, embed), tnn.LSTMCell(embed + C, hidden)
    Wf, Wh = tnn.Linear(C, att, bias=False), tnn.Linear(hidden, att, bias=False)
    v, out = tnn.Linear(att, 1, bias=False), tnn.Linear(hidden + C, V)
    img = torch.tensor(batch["img"]) / 255.0
    w, y = torch.tensor(batch["w"]), torch.tensor(batch["y"])
    mods = (enc, emb, cell, Wf, Wh, v, out)

    def step() -> float:
        B = img.shape[0]
        F = enc(img).flatten(2).transpose(1, 2)                     # (B, P, C)
        Ff = Wf(F)
        h, c = torch.zeros(B, hidden), torch.zeros(B, hidden)
        loss = 0.0
        for k in range(w.shape[0]):
            alpha = torch.softmax(v(torch.tanh(Ff + Wh(h)[:, None])).squeeze(-1), dim=-1)
            z = (alpha[:, :, None] * F).sum(1)
            h, c = cell(torch.cat([emb(w[k]), z], -1), (h, c))
            loss = loss + tnn.functional.cross_entropy(out(torch.cat([h, z], -1)), y[k], reduction="sum")
        loss = loss / B
        loss.backward()
        for m in mods:
            m.zero_grad(set_to_none=True)
        return float(loss.detach())
    return step


def rnnc_step(batch: dict):
    """A training step of the compiled rnnc attention model (loss and every gradient)."""
    model, f = cap.compiled("attention")
    params = model.init_params(seed=0)
    feed = {k: batch[k] for k in ("img", "w", "y")}
    return lambda: float(f.loss_and_grad(feed, params)[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(100, 1, 28, 28)).astype(np.uint8)
    batch = cap.canvases(images, rng.integers(0, 10, 100), a.batch, seed=0)
    runs = {"rnnc": rnnc_step(batch), "torch": torch_step(batch)}
    for fn in runs.values():
        fn()                                                        # compile / warm up
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                fn()
            rates[name].append(a.batch * a.steps / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:6s} {v:8.1f} canvases/s  (rounds: {', '.join(f'{r:.0f}' for r in rates[k])})")
    print(f"rnnc / torch = {med['rnnc'] / med['torch']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
