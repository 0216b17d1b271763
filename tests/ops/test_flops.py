"""``rc.flops``: product counts against hand formulas and against the interpreter (a convolution of ones counts
its in-range products), and the errors a wrong size gets."""
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnc as rc
from rnnc.ops import OPS
from rnnc.ops import image as im

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.cells import CELLS  # noqa: E402

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_a_cell_counts_its_products_per_step_and_sample(cell):
    T, B, I, H = 7, 3, 5, 4
    m = CELLS[cell](I, H)
    forward = 2 * T * B * GATES[cell] * H * (I + H)     # U x[t] and W h[t-1] for each gate, step and sample
    assert rc.flops(m, {"t": T}, B).total == forward
    # a training step: the forward products, d h[t-1] = W^T g and d x[t] = U^T g, and the weight gradients
    # sum_t g h[t-1]^T and sum_t g x[t]^T: three times the forward
    full = rc.flops(rc.grad(m, wrt=[*m.graph.params, "x"]), {"t": T}, B)
    assert full.total == 3 * forward
    assert full.by_op == {"matmul": 2 * forward, "outer_sum": forward}
    # without dL/dx the U^T g products are not in the graph
    no_x = rc.flops(rc.grad(m), {"t": T}, B)
    assert no_x.total == 3 * forward - 2 * T * B * GATES[cell] * H * I


def _conv_model(c, h, w, o, k, stride, padding, dilation):
    m = rc.Model("conv")
    x = m.input("x", (c, h, w), axes=())
    kern = m.param("w", (o, c, k, k))
    y = im.conv2d(x, kern, stride, padding, dilation)
    g = m.input("g", y.shape, axes=())
    dx, dw = OPS["conv2d"].vjp(y, rc.ops.as_node(g))
    m.output("y", y)
    m.output("dx", dx)
    m.output("dw", dw)
    return m, y.shape


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9), o=st.integers(1, 3), k=st.integers(1, 4),
       stride=st.integers(1, 3), padding=st.integers(0, 3), dilation=st.integers(1, 3))
def test_a_convolution_and_its_gradients_count_the_products_that_read_the_map(c, h, w, o, k, stride, padding,
                                                                           dilation):
    if im.out_size(h, k, stride, padding, dilation) < 1 or im.out_size(w, k, stride, padding, dilation) < 1:
        return
    m, shape = _conv_model(c, h, w, o, k, stride, padding, dilation)
    batch = 2
    out = rc.interpret(m, {"x": np.ones((batch, c, h, w)), "g": np.ones((batch,) + shape)},
                       {"w": np.ones((o, c, k, k))}).outputs
    # with ones everywhere each of y, dx and dw sums to the number of (output, tap) products with the input in
    # range; the zero padding's products are not counted
    products = out["y"].sum()
    assert out["dx"].sum() == out["dw"].sum() == products
    count = rc.flops(m, batch=batch)
    assert count.by_op == {"conv2d": 2 * products, "conv2d_input_grad": 2 * products,
                           "conv2d_weight_grad": 2 * products}


def test_a_grid_scan_counts_every_cell_of_its_grid():
    m = rc.Model("grid")
    i, j = rc.axes("i", "j")
    x = m.input("x", 3, axes=(i, j))
    W, U = m.param("W", (4, 4)), m.param("U", (4, 3))
    h = m.signal("h", 4, axes=(i, j))
    h[i, j] = rc.tanh(U @ x[i, j] + W @ h[i - 1, j])
    m.loss(rc.fsum(h[i, j]))
    assert rc.flops(m, {"i": 5, "j": 6}, 2).total == 5 * 6 * 2 * (2 * 4 * 3 + 2 * 4 * 4)


def test_the_flagship_counts_its_layers():
    sys.path.insert(0, str(ROOT / "examples"))
    from reseg_classifier import fashion_reseg

    net = fashion_reseg((16, 32, 64, 128), (64, 128)).build(train=True)
    count = rc.flops(net.model, batch=1)

    def conv(c, o, n):        # 3x3, padding 2, dilation 2 on an n x n map: rows u +- 2 in range
        taps = sum(1 for a in (-2, 0, 2) for u in range(n) if 0 <= u + a < n)
        return 2 * o * c * taps * taps

    convs = conv(1, 16, 28) + conv(16, 32, 14) + conv(32, 64, 7) + conv(64, 128, 4)
    head = 2 * 10 * 256 * 6 * 6 - 2 * 10 * 256 * (36 - 1)       # the 1x1 conv (padding 1) reads 1 of 36 positions
    # SpatialRNN: 2x2 patches of the 128-channel 4x4 map on a 2x2 grid, 64 units per direction; then 2x2
    # patches of that 128-channel 2x2 grid on one cell, 128 units. Each sweep: U (u, d) and W (u, u) per cell.
    sweeps = 4 * 2 * (64 * 512 + 64 * 64) + 4 * 2 * (64 * 128 + 64 * 64)
    sweeps += 1 * 2 * (128 * 512 + 128 * 128) + 1 * 2 * (128 * 256 + 128 * 128)
    assert count.by_op == {"conv2d": convs + head, "matmul": 2 * sweeps}


def test_wrong_sizes_are_refused_naming_the_axis():
    m = CELLS["rnn"](3, 4)
    with pytest.raises(ValueError, match="axis 't' .*has no size"):
        rc.flops(m)
    with pytest.raises(ValueError, match="has no axis 'tt'"):
        rc.flops(m, {"tt": 3})
    with pytest.raises(ValueError, match="axis 't' needs a positive int"):
        rc.flops(m, {"t": 0})
    with pytest.raises(ValueError, match="batch must be a positive int"):
        rc.flops(m, {"t": 3}, batch=1.5)
    import rnnc.nn as nn
    with pytest.raises(TypeError, match=r"expects a Model, GradModel or Graph, got Classifier \(for an nn"):
        rc.flops(nn.Classifier((nn.Dense(2),), (3,)))
    g = rc.Model("fixed")
    x = g.input("x", (1, 4, 4), axes=())
    gi, gj = rc.axes("gi", "gj")
    g.output("y", rc.matmul(g.param("P", (2, 4)), im.to_grid(x, (2, 2), (gi, gj))))
    assert rc.flops(g, {"gi": 2}).total == 2 * 2 * 2 * 2 * 4
    with pytest.raises(ValueError, match="sizes gives axis 'gi' size 3, but the model fixes it at 2"):
        rc.flops(g, {"gi": 3})


def test_the_count_prints_a_table():
    text = str(rc.flops(CELLS["lstm"](3, 4), {"t": 5}, 2))
    assert "batch 2, t=5" in text and "matmul" in text
    assert text.splitlines()[-1].split()[-1] == f"{2 * 5 * 2 * 16 * 7:,}"


def test_the_benchmark_ceiling_is_the_fastest_peer_over_the_products_time_at_the_peak():
    from benchmarks.rnn_cells import flops, fmt

    row = {"rnnc": (6.0, 2.0), "torch": (20.0, 6.0), "torch_nn": (8.0, 2.5), "jax": None,
           "ratios": [(1.3, 1.2)], "interp": (1.0, 0.5)}           # the interpreter is not a peer
    train, infer = fmt(row, "lstm", (50, 32, 64, 128), 180.0, 200.0)   # the ceiling uses the bound, 200
    at_bound_ms = flops("lstm", 50, 32, 64, 128, True) / 200e9 * 1e3  # 943.7 MFLOP: 4.72 ms at 200 GFLOP/s
    assert f"ceiling {8.0 / at_bound_ms:.2f}x" in train and "ceiling 1.70x" in train
    assert f"ceiling {2.5 / (flops('lstm', 50, 32, 64, 128, False) / 200e9 * 1e3):.2f}x" in infer
    assert "(87% of peak)" in train                                   # 943.7 MFLOP in 6 ms against 180
