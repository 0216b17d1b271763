"""A Jordan network and an autonomous dynamic system, trained, with their folded and unrolled drawings.

**Jordan network** (output feeds back, not the hidden state): the running parity of a bit stream, which
needs exactly one remembered bit — the previous output:

.. math::

    h_t = \\tanh(U x_t + W y_{t-1} + b), \\qquad y_t = \\sigma(V h_t + c), \\qquad
    L = \\sum_t \\mathrm{BCE}(y_t, x_1 \\oplus \\dots \\oplus x_t)

**Autonomous system** (no input at all: the state evolves on its own from a learned initial state):

.. math::

    s_{-1} = s_0 \\ (\\text{a param}), \\qquad s_t = \\tanh(A s_{t-1} + a), \\qquad o_t = C s_t, \\qquad
    L = \\sum_t (o_t - \\sin(2\\pi t / P))^2

Fitted on 2 periods, it is then run for 4 (``rc.interpret(..., sizes={"t": T})`` sets the length of an axis
no input fixes) and keeps oscillating.

    python examples/jordan_autonomous.py                       # trains both, drawings to out/jordan_autonomous
    python examples/jordan_autonomous.py --out docs/img        # regenerate the drawings of the docs
    rnnc render examples/jordan_autonomous.py:jordan --unroll t=4 -o jordan.svg
    rnnc render examples/jordan_autonomous.py:autonomous --unroll t=4 -o autonomous.svg
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import rnnc as rc
from rnnc import t
from rnnc.train import Adam

PERIOD = 12
OUT = os.path.join("out", "jordan_autonomous")     # under the working folder; --out docs/img for the docs


def jordan(hidden: int = 8) -> rc.Model:
    """The Jordan network: the previous *output* ``y[t-1]`` enters the hidden layer."""
    m = rc.Model("jordan")
    x = m.input("x", 1)                                   # bits as floats (T, B, 1)
    target = m.input("target", 1)                         # running parity (T, B, 1)
    U = m.param("U", (hidden, 1))                         # input -> hidden
    W = m.param("W", (hidden, 1))                         # previous output -> hidden
    b = m.param("b", hidden, init="zeros")
    V = m.param("V", (1, hidden))                         # hidden -> output
    c = m.param("c", 1, init="zeros")
    y = m.signal("y", 1)
    h = rc.tanh(U @ x[t] + W @ y[t - 1] + b)
    y[t] = rc.sigmoid(V @ h + c)
    m.output("out", y[t])
    m.loss(rc.binary_cross_entropy(y[t], target[t]))
    return m


def autonomous(state: int = 8) -> rc.Model:
    """The autonomous system: no input, a learned initial state, a trained output per step."""
    m = rc.Model("autonomous")
    target = m.input("target", 1)                         # only the loss reads it; running needs sizes
    A = m.param("A", (state, state), init="orthogonal")
    a = m.param("a", state, init="zeros")
    C = m.param("C", (1, state))
    s0 = m.param("s0", state, init=rc.init.Normal(0.5))
    s = m.signal("s", state)
    m.initial(s, s0)
    s[t] = rc.tanh(A @ s[t - 1] + a)
    o = C @ s[t]
    m.output("o", o)
    m.loss(rc.mse(o, target[t]))
    return m


model = jordan()     # the default model of ``rnnc render examples/jordan_autonomous.py``


def parity_task(n: int, length: int, rng) -> dict:
    bits = rng.integers(0, 2, size=(length, n, 1))
    return {"x": bits.astype(float), "target": (np.cumsum(bits, axis=0) % 2).astype(float)}


def wave(length: int) -> np.ndarray:
    return np.sin(2 * np.pi * np.arange(length) / PERIOD)[:, None, None]


def _fit(model, data_fn, steps, lr, seed):
    grad_model = rc.grad(model)
    params = model.init_params(seed=seed, dtype="float64")
    opt, losses = Adam(lr=lr), []
    for step in range(steps):
        res = rc.interpret(grad_model, data_fn(step), params)
        opt.step(params, res.grads)
        losses.append(float(res.loss))
    return params, losses


def train_jordan(steps: int = 400, seed: int = 0, length: int = 8) -> dict:
    """Fit the running parity; ``accuracy`` is the share of steps right on 500 fresh streams of ``2 * length``."""
    rng = np.random.default_rng(seed)
    m = jordan()
    params, losses = _fit(m, lambda _: parity_task(32, length, rng), steps, 0.05, seed)
    test = parity_task(500, 2 * length, np.random.default_rng(seed + 1))
    y = rc.interpret(m, {"x": test["x"]}, params).outputs["out"]
    return {"params": params, "losses": losses, "accuracy": float(((y > 0.5) == (test["target"] > 0.5)).mean())}


def train_autonomous(steps: int = 400, seed: int = 0) -> dict:
    """Fit two periods of a sine; ``rollout`` is the output over four periods (no input needed)."""
    m = autonomous()
    params, losses = _fit(m, lambda _: {"target": wave(2 * PERIOD)}, steps, 0.02, seed)
    rollout = rc.interpret(m, {}, params, sizes={"t": 4 * PERIOD}, batch=1).outputs["o"][:, 0, 0]
    return {"params": params, "losses": losses, "rollout": rollout, "target": wave(4 * PERIOD)[:, 0, 0]}


def draw(out_dir: str = OUT, fmt: str = "svg") -> list[str]:
    """Folded and unrolled (t = 4) drawings of both models: ``examples_{jordan,autonomous}_{folded,unrolled}``."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, m in (("jordan", jordan()), ("autonomous", autonomous())):
        for kind, obj in (("folded", m), ("unrolled", m.unroll(t=4))):
            path = os.path.join(out_dir, f"examples_{name}_{kind}.{fmt}")
            written.append(str(rc.render(obj, path)))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--out", "--img", dest="out", default=OUT,
                    help=f"where the drawings go (default {OUT}; docs/img regenerates the docs' drawings)")
    args = ap.parse_args(argv)
    j = train_jordan(args.steps)
    print(f"Jordan network, running parity: loss {j['losses'][0]:.3f} -> {j['losses'][-1]:.3f}, "
          f"accuracy on streams twice as long {j['accuracy']:.3f}")
    a = train_autonomous(args.steps)
    err = np.abs(a["rollout"] - a["target"])
    print(f"autonomous system: loss {a['losses'][0]:.3f} -> {a['losses'][-1]:.4f}; max error over the fitted "
          f"2 periods {err[:2 * PERIOD].max():.3f}, over the next 2 {err[2 * PERIOD:].max():.3f}")
    for path in draw(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
