"""Sequence to sequence: an encoder–decoder that reverses digit strings.

The cs231n lecture's "many to one" followed by "one to many": an encoder GRU reads the digits along axis
``t``; its last state :math:`e_{T}` (``h.last(t)``) becomes, through ``m.initial``, the initial state of a
decoder GRU on its own axis ``s``. The decoder reads the previous answer digit (teacher forcing; a start
symbol first) and predicts the next one:

.. math::

    e_t = \\mathrm{GRU}_{enc}(\\mathrm{onehot}(x_t), e_{t-1}), \\qquad d_{-1} = e_T, \\qquad
    d_s = \\mathrm{GRU}_{dec}(\\mathrm{onehot}(y^{in}_s), d_{s-1}), \\qquad
    L = -\\sum_s \\log \\mathrm{softmax}(V d_s + c)[y_s]

At test time the decoder is greedy: it is run on the answer so far and its last prediction appended, one
digit at a time. Sequence accuracy = the share of strings whose every digit is right.

    python examples/seq2seq.py                 # about a minute; reports sequence accuracy on fresh strings
    rnnc render examples/seq2seq.py --unroll t=4,s=4 -o seq2seq.svg
"""
from __future__ import annotations

import argparse

import numpy as np

import rnnc as rc
from rnnc import t
from rnnc.nn import GRUCell, network
from rnnc.train import Adam, clip_global_norm

DIGITS = 10
START = DIGITS             # the decoder's first input symbol
s = rc.axes("s")[0]        # the decoder's own axis


def build(hidden: int = 64) -> rc.Model:
    """Encoder along ``t``, decoder along ``s``, joined by ``m.initial(dec, enc.last(t))``."""
    m = rc.Model("seq2seq")
    net = network(m)
    x = m.input("x", (), dtype="int")                      # the digits (T, B)
    y_in = m.input("y_in", (), dtype="int", axes=(s,))     # START, then the answer shifted right (S, B)
    y = m.input("y", (), dtype="int", axes=(s,))           # the answer (S, B)
    enc_cell, dec_cell = GRUCell(hidden), GRUCell(hidden)
    pe = enc_cell.declare(net, "enc", DIGITS)
    pd = dec_cell.declare(net, "dec", DIGITS + 1)
    enc, dec = m.signal("enc", hidden), m.signal("dec", hidden)
    (enc[t],) = enc_cell.step(pe, rc.one_hot(x[t], DIGITS), (enc[t - 1],))
    m.initial(dec, enc.last(t))                                       # many to one ... then one to many
    (dec[s],) = dec_cell.step(pd, rc.one_hot(y_in[s], DIGITS + 1), (dec[s - 1],))
    V = m.param("V", (DIGITS, hidden))
    c = m.param("c", DIGITS, init="zeros")
    logits = V @ dec[s] + c
    m.output("logits", logits)
    m.loss(rc.softmax_cross_entropy(logits, y[s]))
    return m


def task(n: int, length: int, rng) -> dict:
    """``n`` random digit strings (T, B) and their reversals as targets, with the shifted decoder inputs."""
    x = rng.integers(0, DIGITS, size=(length, n))
    y = x[::-1].copy()
    y_in = np.concatenate([np.full((1, n), START), y[:-1]])
    return {"x": x, "y_in": y_in, "y": y}


def decode(model, params, x: np.ndarray) -> np.ndarray:
    """Greedy decoding of the answer to ``x`` (T, B): one decoder step more per call."""
    n, length = x.shape[1], x.shape[0]
    y_in = np.full((1, n), START)
    for k in range(length):
        logits = rc.interpret(model, {"x": x, "y_in": y_in}, params).outputs["logits"]
        guess = logits[-1].argmax(-1)
        if k + 1 == length:
            return np.concatenate([y_in[1:], guess[None]])
        y_in = np.concatenate([y_in, guess[None]])
    return y_in[1:]


def sequence_accuracy(model, params, data: dict) -> float:
    """The share of strings decoded exactly (every digit right)."""
    return float((decode(model, params, data["x"]) == data["y"]).all(axis=0).mean())


def train(steps: int = 600, seed: int = 0, length: int = 5, hidden: int = 64, batch: int = 64, lr: float = 1e-2,
          save: str | None = None, log=print) -> dict:
    """Adam on fresh random strings each step; returns ``{"params", "losses", "accuracy"}`` (on 500 new strings).

    ``log=None`` skips the progress lines (and the test-set decoding they report).
    """
    rng = np.random.default_rng(seed)
    model = build(hidden)
    grad_model = rc.grad(model)
    params = model.init_params(seed=seed, dtype="float32")
    opt, losses = Adam(lr=lr), []
    test = task(500, length, np.random.default_rng(seed + 1000))
    for step in range(1, steps + 1):
        res = rc.interpret(grad_model, task(batch, length, rng), params)
        grads, _ = clip_global_norm(res.grads, 5.0)
        opt.step(params, grads)
        losses.append(float(res.loss) / length)
        if log is not None and step % max(steps // 6, 1) == 0:
            log(f"step {step:5d}  loss/digit {np.mean(losses[-20:]):.3f}  "
                f"sequence accuracy {sequence_accuracy(model, params, test):.3f}")
    if save:
        np.savez(save, **params)
    return {"params": params, "losses": losses, "accuracy": sequence_accuracy(model, params, test)}


def predict(params: dict, prompt: str = "1234") -> str:
    """The decoded reversal of the digit string ``prompt``."""
    if not prompt.isdigit():
        raise ValueError(f"prompt must be a string of digits, got {prompt!r}")
    x = np.array([[int(ch)] for ch in prompt])
    out = decode(build(params["V"].shape[1]), params, x)
    return "".join(str(int(d)) for d in out[:, 0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--length", type=int, default=5, help="digits per string")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="write the trained params to this .npz")
    args = ap.parse_args(argv)
    out = train(args.steps, args.seed, args.length, save=args.save)
    print(f"sequence accuracy on 500 fresh strings of {args.length} digits: {out['accuracy']:.3f} "
          f"(chance {DIGITS ** -args.length:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
