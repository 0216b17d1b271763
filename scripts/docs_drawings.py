"""Regenerate the drawings in docs/img (Graphviz's `dot` must be on PATH) and print their sizes.

    python scripts/docs_drawings.py            # every drawing
    python scripts/docs_drawings.py bptt       # only those whose file name contains "bptt"

Each drawing is one line below: the file stem, the object drawn, the options, and the formats (PNG too where
a page shows the PNG). A drawing wider than ~1,600 px is reported, since the pages show them at full width.
"""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")]

import rnnc as rc  # noqa: E402
from rnnc import t  # noqa: E402

IMG = os.path.join(ROOT, "docs", "img")
MAX_PX = 1600


def bidirectional(X: int = 3, H: int = 4, K: int = 2) -> rc.Model:
    """A forward chain f (t-1) and a reverse chain r (t+1) over one input, one output per step."""
    m = rc.Model("bidirectional")
    x, y = m.input("x", X), m.input("y", (), dtype="int")
    f, r = m.signal("f", H), m.signal("r", H)
    f[t] = rc.tanh(m.param("Uf", (H, X)) @ x[t] + m.param("Wf", (H, H)) @ f[t - 1])
    r[t] = rc.tanh(m.param("Ur", (H, X)) @ x[t] + m.param("Wr", (H, H)) @ r[t + 1])
    o = m.param("Vf", (K, H)) @ f[t] + m.param("Vr", (K, H)) @ r[t]
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))
    return m


def renet(C: int = 3, H: int = 4) -> rc.Model:
    """The ReNet block: scan down and up along i, then right and left along j."""
    i, j = rc.axes("i", "j")
    m = rc.Model("renet")
    x = m.input("x", C, axes=(i, j))
    down, up, right, left = (m.signal(n, H) for n in ("down", "up", "right", "left"))
    down[i, j] = rc.tanh(m.param("Ud", (H, C)) @ x[i, j] + m.param("Wd", (H, H)) @ down[i - 1, j])
    up[i, j] = rc.tanh(m.param("Uu", (H, C)) @ x[i, j] + m.param("Wu", (H, H)) @ up[i + 1, j])
    v = rc.concat([down[i, j], up[i, j]])
    right[i, j] = rc.tanh(m.param("Ur", (H, 2 * H)) @ v + m.param("Wr", (H, H)) @ right[i, j - 1])
    left[i, j] = rc.tanh(m.param("Ul", (H, 2 * H)) @ v + m.param("Wl", (H, H)) @ left[i, j + 1])
    m.output("out", rc.concat([right[i, j], left[i, j]]))
    return m


def drawings() -> list[tuple[str, object, dict, tuple]]:
    import bptt_memory
    import elman
    import hello
    import jordan_autonomous as ja
    import recurrence_patterns as rp
    import seq2seq

    hello_m, elman_m, lstm_m = hello.build(), elman.model, bptt_memory.lstm(8, 16, 4)
    out = [
        ("elman_folded", elman_m, {}, ("svg", "png")),
        ("elman_unrolled", elman_m.unroll(t=4), {}, ("svg", "png")),
        ("examples_hello_folded", hello_m, {}, ("svg",)),
        ("examples_hello_unrolled", hello_m.unroll(t=4), {}, ("svg",)),
        ("examples_hello_bptt", rc.grad(hello_m).unroll(t=3), {}, ("svg",)),
        ("examples_jordan_folded", ja.jordan(), {}, ("svg",)),
        ("examples_jordan_unrolled", ja.jordan().unroll(t=4), {}, ("svg",)),
        ("examples_autonomous_folded", ja.autonomous(), {}, ("svg",)),
        ("examples_autonomous_unrolled", ja.autonomous().unroll(t=4), {}, ("svg",)),
        ("bidirectional_unrolled", bidirectional().unroll(t=4), {}, ("svg",)),
        ("seq2seq_unrolled", seq2seq.build(8).unroll(t=3, s=2), {}, ("svg",)),
        ("renet_folded", renet(), {}, ("svg",)),
        ("renet_unrolled", renet().unroll(i=2, j=2), {}, ("svg",)),
        ("bptt_elman_folded", rc.grad(elman_m), {}, ("svg", "png")),
        ("bptt_elman_unrolled", rc.grad(elman_m).unroll(t=3), {}, ("svg", "png")),
        ("bptt_lstm_folded", rc.grad(lstm_m), {"detail": "cells"}, ("svg", "png")),
        ("bptt_lstm_unrolled", rc.grad(lstm_m).unroll(t=2), {}, ("svg",)),
    ]
    for key, make in rp.PATTERNS.items():
        out.append((f"examples_{key}_folded", make(), {}, ("svg",)))
        out.append((f"examples_{key}_unrolled", make().unroll(t=4), {}, ("svg",)))
    return out


def width_px(obj, options: dict) -> float:
    bb = json.loads(rc.viz.to_dot(obj, **options).pipe(format="json"))["bb"]
    return float(bb.split(",")[2]) * 96 / 72


def main(argv: list[str]) -> int:
    wide = []
    for stem, obj, options, formats in drawings():
        if argv and not any(a in stem for a in argv):
            continue
        for fmt in formats:
            rc.render(obj, os.path.join(IMG, f"{stem}.{fmt}"), **options)
        px = width_px(obj, options)
        wide += [stem] if px > MAX_PX else []
        print(f"{stem:34s} {px:7.0f} px wide  ({', '.join(formats)})")
    if wide:
        print(f"wider than {MAX_PX} px: {', '.join(wide)}")
    return 1 if wide else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
