"""The segment gradient kernel of ``rc.compile(m, checkpoint=k)`` (:mod:`rnnc.runtime.segments`): the adjoint
:math:`\\lambda` of the state leaving a segment enters as the initial value of the reverse scan (no per-step
array carries it), and the gradients across segment boundaries stay exact."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from compiled_check import close
from gradcheck import verify_grad
from paths import BENCHMARKS, CACHE_DIR
from zoo import ZOO

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)
sys.path.insert(0, str(BENCHMARKS))

from bptt_memory import lstm  # noqa: E402  (the LSTM whose memory docs/benchmarks.md reports)

import rnnc as rc  # noqa: E402

HIDDEN = 16


def per_step_floats(kernel) -> int:
    """Floats per step and sample of the kernel's own buffers along its loop axis (views of another buffer
    excluded): the part of its memory that grows with the segment length ``k``."""
    total = 0
    for spec in kernel.layout.buffers:
        if spec.view or not spec.dims or spec.dims[0] not in kernel.source_graph.axes():
            continue
        total += int(np.prod(spec.shape, dtype=np.int64))
    return total


def test_segment_gradient_kernel_stores_no_adjoint_sequence():
    """The benchmark's LSTM: per step, input products / gates' adjoints (4 H), h, c and the four gates (10 H) and a
    few logit-sized arrays. The adjoint of the leaving state is an initial value (no ``at_index`` sequences:
    16 H before phase 1, 14 H after); ``d_h[t-1]`` and ``d_c[t-1]`` live in rings of two step buffers,
    ``tanh(c)`` is recomputed by the reverse scan and ``V' dz`` is a product per step inside it (14 H -> 10 H:
    232 floats per step at H = 16 before, 168 after); the gates are written over the input products and their
    adjoints over the gates (``rnnc/backends/cpu/inplace.py``: 10 H -> 6 H, 104 floats)."""
    m = lstm(4, HIDDEN, 2)
    f = rc.compile(m, dtype="float64", checkpoint=3)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(7, 2, 4)), "y": rng.integers(0, 2, size=(7, 2))}
    params = m.init_params(seed=0, dtype="float64")
    f.loss_and_grad(inputs, params)
    k = f.segments.kernel("segment_grad")
    assert "at_index" not in {n.op for n in k.source_graph.nodes}
    assert per_step_floats(k) < 7 * HIDDEN, per_step_floats(k)
    rings = [b.var for b in k.layout.buffers if b.var.startswith(("qa", "qb"))]
    assert sorted(v.split("_", 1)[1] for v in rings) == ["d_c_tm1", "d_c_tm1", "d_h_tm1", "d_h_tm1"], rings


@pytest.mark.parametrize("name, steps, every", [("lstm", 7, 3), ("lstm", 8, 3), ("lstm", 6, 6),
                                                ("stack2", 7, 2), ("many_to_one", 7, 3)])
def test_gradients_across_segment_boundaries(name, steps, every):
    """Lengths that are not multiples of k (a short last segment), a single segment, two states per boundary
    and a loss read only at the last step (middle segments with no loss of their own): the loss and gradients
    equal the interpreter's, and central differences of the loss (float64)."""
    case = ZOO[name]()
    f = rc.compile(case.model, dtype="float64", checkpoint=every)
    assert f.segments is not None
    B = 2
    inputs = case.make_inputs(np.random.default_rng(steps), steps, B, np.float64)
    params = case.params(every)
    sizes = case.sizes(steps)
    loss, grads = f.loss_and_grad(inputs, params, sizes=sizes, batch=B)
    ref = rc.interpret(rc.grad(case.model), inputs, params, dtype="float64", sizes=sizes, batch=B)
    assert close(loss, ref.loss, 1e-10), (loss, ref.loss)
    for key in ref.grads:
        assert close(grads[key], ref.grads[key], 1e-10), key

    def loss_of(p):
        return rc.interpret(case.model, inputs, p, dtype="float64", sizes=sizes, batch=B).loss

    arrays = {key: v.copy() for key, v in params.items()}
    verify_grad(loss_of, arrays, grads, picks=4, rng=np.random.default_rng(1), tol=1e-6)
