"""Many to one: classify variable-length sequences with one answer per sequence.

Each sample is a sequence of numbers :math:`x_1 \\dots x_{n_b}` of its own length :math:`n_b` (padded to the
longest in the batch); the class is whether their sum is positive. A GRU reads the sequence; the classifier
looks only at the state after each sample's *own* last step:

.. math::

    h_t = \\mathrm{GRU}(x_t, h_{t-1}), \\qquad z = W\\, h_{n_b} + c, \\qquad L = \\frac{1}{B}\\sum_b
    -\\log \\mathrm{softmax}(z_b)[y_b]

``m.input("x", 1, lengths=True)`` adds the input ``x_lengths`` (B,); past a sample's length its state stops
changing, so ``rc.last(h, t)`` is :math:`h_{n_b}` and whatever the padding holds cannot change the answer.

    python examples/many_to_one.py
"""
from __future__ import annotations

import argparse

import numpy as np

import rnnc as rc
import rnnc.nn as nn
from rnnc import t
from rnnc.train import Adam

MAX_LEN = 12


def build(hidden: int = 16) -> rc.Model:
    """GRU over the padded batch, the last valid state, a 2-class softmax."""
    m = rc.Model("many_to_one")
    x = m.input("x", 1, lengths=True)            # (T, B, 1) and x_lengths (B,)
    y = m.input("y", (), dtype="int", axes=())    # one class per sequence (B,)
    h = nn.GRU(hidden)(m, x)
    logits = nn.Dense(2)(m, rc.last(h, t))        # h at each sample's own last step
    m.output("probs", rc.softmax(logits))
    m.loss(rc.softmax_cross_entropy(logits, y))
    return m


def task(n: int, rng, pad_value: float | None = None) -> dict:
    """``n`` sequences of lengths 1..MAX_LEN; padding is random noise unless ``pad_value`` is given."""
    lengths = rng.integers(1, MAX_LEN + 1, size=n)
    x = rng.normal(size=(MAX_LEN, n, 1))
    valid = np.arange(MAX_LEN)[:, None] < lengths[None, :]
    y = ((x[..., 0] * valid).sum(axis=0) > 0).astype(np.int64)
    x = np.where(valid[..., None], x, rng.normal(scale=10, size=x.shape) if pad_value is None else pad_value)
    return {"x": x, "x_lengths": lengths, "y": y}


def accuracy(model, params, data: dict) -> float:
    probs = rc.interpret(model, data, params).outputs["probs"]
    return float((probs.argmax(-1) == data["y"]).mean())


def train(steps: int = 300, seed: int = 0, batch: int = 64, lr: float = 1e-2, save: str | None = None,
          log=print) -> dict:
    """Adam on fresh batches; returns ``{"params", "losses", "accuracy"}`` (accuracy on 1000 new sequences)."""
    rng = np.random.default_rng(seed)
    model = build()
    grad_model = rc.grad(model)
    params = model.init_params(seed=seed, dtype="float32")
    test = task(1000, np.random.default_rng(seed + 1000))
    opt, losses = Adam(lr=lr), []
    for step in range(1, steps + 1):
        res = rc.interpret(grad_model, task(batch, rng), params)
        opt.step(params, res.grads)
        losses.append(float(res.loss))
        if step % max(steps // 5, 1) == 0:
            log(f"step {step:4d}  loss {np.mean(losses[-20:]):.3f}  accuracy {accuracy(model, params, test):.3f}")
    if save:
        np.savez(save, **params)
    return {"params": params, "losses": losses, "accuracy": accuracy(model, params, test)}


def predict(params: dict, prompt: str = "0.5 -1 2") -> str:
    """The class probabilities of one sequence given as numbers separated by spaces."""
    values = [float(v) for v in prompt.split()]
    if not values:
        raise ValueError("prompt must hold at least one number")
    data = {"x": np.array(values)[:, None, None], "x_lengths": np.array([len(values)])}
    p = rc.interpret(build(), data, params).outputs["probs"][0]
    return f"P(sum > 0) = {p[1]:.3f}  (the sum is {sum(values):+.3f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="write the trained params to this .npz")
    args = ap.parse_args(argv)
    out = train(args.steps, args.seed, save=args.save)
    print(f"accuracy on 1000 fresh variable-length sequences: {out['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
