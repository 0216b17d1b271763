"""Work buffers: zeroed, disjoint, C-contiguous views whose starts fall on distinct offsets within a page."""

import numpy as np
from compiled_check import assert_grads_match
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnc as rc
from rnnc.runtime.arena import LINE, PAGE, staggered

shapes = st.lists(st.tuples(st.lists(st.integers(0, 40), max_size=3).map(tuple),
                            st.sampled_from([np.float32, np.float64, np.int64])), min_size=1, max_size=70)


@given(shapes)
@settings(max_examples=60, deadline=None)
def test_staggered_buffers_are_zeroed_disjoint_and_spread(specs):
    arrays = staggered(specs)
    assert [(a.shape, a.dtype) for a in arrays] == [(s, np.dtype(d)) for s, d in specs]
    spans = []
    for a in arrays:
        assert a.flags.c_contiguous and a.flags.writeable and not a.any()
        if not a.size:
            continue                                    # an empty view's address means nothing
        start = a.ctypes.data
        assert start % LINE == 0
        spans.append((start, start + a.nbytes))
    spans.sort()
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))
    offsets = [a.ctypes.data % PAGE for a in arrays[:PAGE // LINE] if a.size]
    assert len(set(offsets)) == len(offsets)            # 64 buffers, 64 different offsets within a page
    for k, a in enumerate(arrays):                      # writing one leaves the others as they were
        a.fill(k + 1)
    assert all((a == k + 1).all() for k, a in enumerate(arrays))


def test_compiled_kernel_buffers_start_on_distinct_page_offsets():
    """Buffers big enough to be mapped one by one (150 KB each) would all start at one page offset."""
    m = rc.Model("arena_elman")
    x, y = m.input("x", 3), m.input("y", 4)
    U, W, b = m.param("U", (4, 3)), m.param("W", (4, 4)), m.param("b", 4)
    h = m.signal("h", 4)
    h[rc.t] = rc.tanh(U @ x[rc.t] + W @ h[rc.t - 1] + b)
    m.loss(rc.mse(h[rc.t], y[rc.t]))
    f = rc.compile(m, dtype="float64")
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((1200, 4, 3)), "y": rng.standard_normal((1200, 4, 4))}
    params = m.init_params(0, "float64")
    # views of one block compute the same
    assert_grads_match(f, m, data, params, 1e-10, atol=1e-12, loss_tol=1e-12)
    kernel = f.kernel("grad")
    bufs = list(kernel._buffers.values())[0]
    assert len(bufs) > 3
    own = [spec.var for spec in kernel.layout.buffers if not spec.view]     # not a lagged pair's views
    offsets = [bufs[var].ctypes.data % PAGE for var in own]
    assert len(set(offsets)) == len(offsets)
