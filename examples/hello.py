"""The lecture's first character model: learn to spell "hello".

Alphabet {h, e, l, o}, one-hot inputs, 3 recurrent (Elman) units and a softmax over the 4 letters:

.. math::

    h_t = \\tanh(U\\, \\mathrm{onehot}(x_t) + W h_{t-1} + b), \\qquad p_t = \\mathrm{softmax}(V h_t + c),
    \\qquad L = -\\sum_t \\log p_t[y_t]

trained on the input "hell" with targets "ello" (each letter predicts the next). Greedy sampling from "h"
then spells "hello": the two l's need the state, since "l" is followed by "l" once and by "o" once.

    python examples/hello.py               # trains (about a second) and prints the sample
    rnnc train examples/hello.py --save hello.npz && rnnc predict examples/hello.py --params hello.npz --prompt h
    rnnc render examples/hello.py --unroll t=4 -o hello.svg
"""
from __future__ import annotations

import argparse

import numpy as np

import rnnc as rc
from rnnc import t
from rnnc.train import Adam

ALPHABET = "helo"
WORD = "hello"


def build(hidden: int = 3) -> rc.Model:
    """The character model: letters in as indices (one-hot inside the model), next-letter logits out."""
    m = rc.Model("hello")
    x = m.input("x", (), dtype="int")           # letter index per step: array (T, B)
    y = m.input("y", (), dtype="int")           # next letter's index
    k = len(ALPHABET)
    U = m.param("U", (hidden, k))
    W = m.param("W", (hidden, hidden))
    b = m.param("b", hidden, init="zeros")
    V = m.param("V", (k, hidden))
    c = m.param("c", k, init="zeros")
    h = m.signal("h", hidden)
    h[t] = rc.tanh(U @ rc.one_hot(x[t], k) + W @ h[t - 1] + b)
    o = V @ h[t] + c
    m.output("p", rc.softmax(o))
    m.loss(rc.softmax_cross_entropy(o, y[t]))
    return m


def encode(text: str) -> np.ndarray:
    """Letters -> indices laid out (T, B=1)."""
    return np.array([[ALPHABET.index(ch)] for ch in text])


def sample(model: rc.Model, params: dict, prompt: str = "h", length: int = len(WORD)) -> str:
    """Greedy sampling: feed the text so far, append the most probable next letter, repeat."""
    text = prompt
    while len(text) < length:
        probs = rc.interpret(model, {"x": encode(text)}, params).outputs["p"]   # (T, 1, 4)
        text += ALPHABET[int(probs[-1, 0].argmax())]
    return text


def train(steps: int = 300, seed: int = 0, lr: float = 0.1, save: str | None = None, log=print) -> dict:
    """Adam on the one training pair ("hell" -> "ello") until greedy sampling spells "hello" (or ``steps``).

    Returns ``{"params", "loss", "steps", "sample"}``; ``save`` writes the params as ``.npz``.
    """
    model = build()
    grad_model = rc.grad(model)
    params = model.init_params(seed=seed, dtype="float64")
    batch = {"x": encode(WORD[:-1]), "y": encode(WORD[1:])}
    opt = Adam(lr=lr)
    loss, step, text = float("nan"), 0, ""
    for step in range(1, steps + 1):
        res = rc.interpret(grad_model, batch, params)
        opt.step(params, res.grads)
        loss = float(res.loss)
        if step % 25 == 0:
            text = sample(model, params)
            log(f"step {step:4d}  loss {loss:.4f}  sample {text!r}")
            if text == WORD and loss < 0.1:
                break
    if save:
        np.savez(save, **params)
    return {"params": params, "loss": loss, "steps": step, "sample": sample(model, params)}


def predict(params: dict, prompt: str = "h", length: int = len(WORD)) -> str:
    """The greedy continuation of ``prompt`` (letters of "helo") under ``params``."""
    bad = sorted(set(prompt) - set(ALPHABET))
    if bad or not prompt:
        raise ValueError(f"prompt must be a non-empty string over {ALPHABET!r}, got {prompt!r}")
    return sample(build(), params, prompt, max(length, len(prompt)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="write the trained params to this .npz")
    args = ap.parse_args(argv)
    out = train(args.steps, args.seed, save=args.save)
    print(f"after {out['steps']} steps: loss {out['loss']:.4f}, greedy sample from 'h': {out['sample']!r}")
    return 0 if out["sample"] == WORD else 1


if __name__ == "__main__":
    raise SystemExit(main())
