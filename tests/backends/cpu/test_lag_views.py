"""A scan's kept reference ``s[t-j]`` is a view of its value's array, ``j`` steps apart (refs.plan_lags): no
copy per step, one array for both, the initial value written into the first ``j`` steps before the loop."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from paths import REPO

sys.path.insert(0, str(REPO))
from compiled_check import assert_grads_match, assert_matches_interpreter  # noqa: E402
from zoo import ZOO  # noqa: E402

import rnnc as rc  # noqa: E402
from benchmarks.cells import CELLS  # noqa: E402


def _views(kernel) -> dict:
    """{var: (base, start)} of the kernel's lagged pairs (a base with lagged entries; not a buffer that takes a
    dead one's storage, rnnc/backends/cpu/reuse.py)."""
    extra = {b.var: b.extra for b in kernel.layout.buffers}
    return {b.var: b.view for b in kernel.layout.buffers if b.view and extra[b.view[0]]}


def test_lstm_h_and_c_of_the_previous_step_are_views_not_copies():
    m = CELLS["lstm"](3, 5)
    f = rc.compile(m, dtype="float64", wrt=[*m.graph.params, "x"])
    kernel = f.kernel("grad")
    views = _views(kernel)
    bases = {base for base, _ in views.values()}
    assert len(bases) == 2 and sorted(start for _, start in views.values()) == [0, 0, 1, 1]
    scan = kernel.source[kernel.source.index("scan over t, forward"):]
    scan = scan[:scan.index("return 0")]
    assert "(i0 + -1)" not in scan                      # no shifted copy inside the forward scan
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((6, 2, 3)), "y": rng.standard_normal((6, 2, 5))}
    assert_grads_match(f, m, inputs, m.init_params(1, "float64"), 1e-10, wrt=[*m.graph.params, "x"])
    bufs = next(iter(kernel._buffers.values()))
    for var, (base, start) in views.items():        # one array: the value one step past its reference
        assert np.shares_memory(bufs[var], bufs[base]) and bufs[var].ctypes.data == \
            bufs[base].ctypes.data + start * bufs[base][0].nbytes


@pytest.mark.parametrize("T", [1, 2, 5])
@pytest.mark.parametrize("name", ["two_tap", "bidirectional", "encoder_decoder", "variable_length", "stack2", "gru"])
def test_lagged_models_equal_the_interpreter(name, T):
    """Forward and reverse scans, two lags of one value (two_tap; T = 1 is shorter than its lag of 2), an
    initial value that is not zero (encoder_decoder), variable lengths."""
    case = ZOO[name]()
    f = rc.compile(case.model, dtype="float64")
    assert _views(f.kernel("grad"))
    if name == "two_tap":
        assert len({base for base, _ in _views(f.kernel("grad")).values()}) == 1 and \
            len(_views(f.kernel("grad"))) == 3          # h, h[t-1], h[t-2]: one array of T + 2 steps
    params = case.params(seed=T)
    for seed in (0, 1):                                  # a second call rewrites the initial steps
        inputs = case.make_inputs(np.random.default_rng(seed), T, 3, np.float64)
        assert_matches_interpreter(f, case.model, inputs, params, 1e-10)
