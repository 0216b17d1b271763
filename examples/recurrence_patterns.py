"""The lecture's three recurrence patterns, each as a model and an unrolled drawing.

1. **hidden → hidden**, an output every step (the Elman network):
   :math:`h_t = \\tanh(U x_t + W h_{t-1} + b)`, :math:`o_t = V h_t + c`, a loss at every step.
2. **output → hidden**: the previous *output* is fed back, not the state (less expressive: the output
   must carry everything the next step needs to know about the past):
   :math:`h_t = \\tanh(U x_t + W o_{t-1} + b)`, :math:`o_t = V h_t + c`.
3. **a single output after reading the whole sequence**:
   :math:`h_t = \\tanh(U x_t + W h_{t-1} + b)`, :math:`o = V h_T + c` (``h.last(t)``), one loss per sequence.

    python examples/recurrence_patterns.py                # writes out/recurrence_patterns/examples_pattern*.svg
    python examples/recurrence_patterns.py --out docs/img # regenerate the drawings of the docs
    rnnc render examples/recurrence_patterns.py:output_to_hidden --unroll t=4 -o pattern2.svg
"""
from __future__ import annotations

import argparse
import os

import rnnc as rc
from rnnc import t

OUT = os.path.join("out", "recurrence_patterns")     # under the working folder; --out docs/img for the docs


def _start(name: str, n_in: int, hidden: int, n_out: int, per_step: bool = True):
    m = rc.Model(name)
    x = m.input("x", n_in)
    y = m.input("y", (), dtype="int", axes=(t,) if per_step else ())
    p = {"U": m.param("U", (hidden, n_in)), "b": m.param("b", hidden, init="zeros"),
         "V": m.param("V", (n_out, hidden)), "c": m.param("c", n_out, init="zeros")}
    return m, x, y, p


def hidden_to_hidden(n_in: int = 4, hidden: int = 8, n_out: int = 3) -> rc.Model:
    """Pattern 1: state recurrence, an output and a loss at every step."""
    m, x, y, p = _start("hidden_to_hidden", n_in, hidden, n_out)
    W = m.param("W", (hidden, hidden))
    h = m.signal("h", hidden)
    h[t] = rc.tanh(p["U"] @ x[t] + W @ h[t - 1] + p["b"])
    o = p["V"] @ h[t] + p["c"]
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))
    return m


def output_to_hidden(n_in: int = 4, hidden: int = 8, n_out: int = 3) -> rc.Model:
    """Pattern 2: the previous output ``o[t-1]`` is the only thing carried from step to step."""
    m, x, y, p = _start("output_to_hidden", n_in, hidden, n_out)
    W = m.param("W", (hidden, n_out))
    o = m.signal("o", n_out)
    o[t] = p["V"] @ rc.tanh(p["U"] @ x[t] + W @ o[t - 1] + p["b"]) + p["c"]
    m.output("out", o[t])
    m.loss(rc.softmax_cross_entropy(o[t], y[t]))
    return m


def sequence_to_one(n_in: int = 4, hidden: int = 8, n_out: int = 3) -> rc.Model:
    """Pattern 3: read the whole sequence, then one output from the last state."""
    m, x, y, p = _start("sequence_to_one", n_in, hidden, n_out, per_step=False)
    W = m.param("W", (hidden, hidden))
    h = m.signal("h", hidden)
    h[t] = rc.tanh(p["U"] @ x[t] + W @ h[t - 1] + p["b"])
    o = p["V"] @ h.last(t) + p["c"]
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y))
    return m


PATTERNS = {"pattern1": hidden_to_hidden, "pattern2": output_to_hidden, "pattern3": sequence_to_one}
build = hidden_to_hidden     # the default model of ``rnnc render examples/recurrence_patterns.py``


def draw(out_dir: str = OUT, steps: int = 4, fmt: str = "svg") -> list[str]:
    """``examples_pattern{1,2,3}_unrolled.<fmt>``: each pattern unrolled over ``steps`` steps."""
    os.makedirs(out_dir, exist_ok=True)
    return [str(rc.render(make().unroll(t=steps), os.path.join(out_dir, f"examples_{key}_unrolled.{fmt}")))
            for key, make in PATTERNS.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", "--img", dest="out", default=OUT,
                    help=f"where the drawings go (default {OUT}; docs/img regenerates the docs' drawings)")
    ap.add_argument("--steps", type=int, default=4, help="steps to unroll (default 4)")
    args = ap.parse_args(argv)
    for key, make in PATTERNS.items():
        print(f"{key}: {make.__doc__.splitlines()[0]}\n{rc.schedule(make())}\n")
    for path in draw(args.out, args.steps):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
