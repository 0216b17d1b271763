"""Many to one: classify variable-length sequences with one answer per sequence.

Each sample is a sequence of numbers :math:`x_1 \\dots x_{n_b}` of its own length :math:`n_b` (padded to the
longest in the batch); the class is whether their sum is positive. A GRU reads the sequence; the classifier
looks only at the state after each sample's *own* last step:

.. math::

    h_t = \\mathrm{GRU}(x_t, h_{t-1}), \\qquad z = W\\, h_{n_b} + c, \\qquad L = \\frac{1}{B}\\sum_b
    -\\log \\mathrm{softmax}(z_b)[y_b]

``m.input("x", 1, lengths=True)`` adds the input ``x_lengths`` (B,); past a sample's length its state stops
changing, so ``rc.last(h, t)`` is :math:`h_{n_b}` and whatever the padding holds cannot change the answer.

    python examples/many_to_one.py                 # rnnc.train.Trainer, 3 epochs, seconds
"""
from __future__ import annotations

import argparse

import numpy as np

import rnnc as rc
import rnnc.nn as nn
from rnnc import t
from rnnc.nn import network
from rnnc.train import Adam, Trainer

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


def train(epochs: int = 3, seed: int = 0, batch: int = 64, lr: float = 1e-2, n_train: int = 2000,
          save: str | None = None, log=print) -> dict:
    """``rnnc.train.Trainer`` (Adam, shuffled mini-batches) on ``n_train`` sequences for ``epochs`` epochs.

    Returns ``{"params", "history", "accuracy"}``, the accuracy measured on 1000 new sequences.
    """
    model = build()
    data = task(n_train, np.random.default_rng(seed))
    test = task(1000, np.random.default_rng(seed + 1000))
    trainer = Trainer(network(model), Adam(lr=lr), batch_size=batch, seed=seed, engine="interpret",
                      progress=False)
    for epoch in range(1, epochs + 1):
        row = trainer.fit(data, epochs=epoch, val=test)[-1]
        if log is not None:
            log(f"epoch {epoch}  loss {row['loss']:.3f}  train accuracy {row['accuracy']:.3f}  "
                f"test accuracy {row['val_accuracy']:.3f}")
    if save:
        np.savez(save, **trainer.params)
    return {"params": trainer.params, "history": trainer.history, "accuracy": accuracy(model, trainer.params, test)}


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
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="write the trained params to this .npz")
    args = ap.parse_args(argv)
    out = train(args.epochs, args.seed, save=args.save)
    print(f"accuracy on 1000 fresh variable-length sequences: {out['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
