"""``remat``: a scan's cheap elementwise value that a later stage reads is recomputed there (same meaning, and
the value no longer crosses stages)."""
from __future__ import annotations

import os
import sys

import numpy as np
from paths import BENCHMARKS, CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)
sys.path.insert(0, str(BENCHMARKS))

from bptt_memory import lstm  # noqa: E402  (the LSTM whose memory docs/benchmarks.md reports)

import rnnc as rc  # noqa: E402
from rnnc.passes import CPU_PIPELINE, run_pipeline  # noqa: E402
from rnnc.passes.remat import candidates, remat  # noqa: E402
from rnnc.schedule.schedule import build_schedule  # noqa: E402


def _read_across_stages(graph, op: str) -> list:
    """Nodes of ``op`` (alone or as a fused program of one instruction) read by a stage other than their own."""
    stages = build_schedule(graph)
    stage_of = {n: k for k, s in enumerate(stages) for n in s.nodes}
    out = []
    for n in graph.nodes:
        own = n.op == op or (n.op == "fused" and [o for o, *_ in n.attr("prog")] == [op])
        if own and any(n in u.inputs and stage_of.get(u) != stage_of.get(n) for u in graph.nodes):
            out.append(n)
    return out


def test_lstm_tanh_c_is_recomputed_by_the_reverse_scan():
    m = lstm(3, 5, 2)
    g = run_pipeline(rc.grad(m).graph, [p for p in CPU_PIPELINE if p[0] != "remat"])
    assert len(candidates(g)) == 1 and _read_across_stages(g, "tanh")   # tanh(c[t]), stored for every step
    after = remat(g)
    assert _read_across_stages(after, "tanh") == [] and candidates(after) == set()
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(6, 2, 3)), "y": rng.integers(0, 2, size=(6, 2))}
    params = m.init_params(seed=0, dtype="float64")
    ra, rb = rc.interpret(g, inputs, params), rc.interpret(after, inputs, params)
    assert ra.loss == rb.loss
    for k in ra.grads:
        np.testing.assert_array_equal(rb.grads[k], ra.grads[k])
