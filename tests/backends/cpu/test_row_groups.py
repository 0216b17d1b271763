"""Products of a map stage that read the same rows run together, chunk by chunk (``lak.row_products``,
:mod:`rnnc.backends.cpu.row_groups`): only when moving them is safe, and with the interpreter's results for
chunked, unchunked and unequal row blocks."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from paths import BENCHMARKS, CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

from compiled_check import assert_grads_match  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc.backends.cpu import kernels_linalg as lak  # noqa: E402
from rnnc.backends.cpu.pieces import RunCall  # noqa: E402
from rnnc.backends.cpu.row_groups import group_row_products  # noqa: E402

sys.path.insert(0, str(BENCHMARKS))
from cells import CELLS  # noqa: E402


def OUTER(x: str, o: str) -> RunCall:
    """``lak.outer_rows(g, x, o, threads_)`` as the renderer writes it."""
    return RunCall("lak", "outer_rows", ("g.reshape((n0 * nb, 8))", f"{x}.reshape((n0 * nb, 3))", o),
                   reads=("g", x), writes=(o,), comment=f"{o} = outer_sum")


def MATMUL(o: str) -> RunCall:
    """``lak.matmul_rows(g, w, o, threads_)``."""
    return RunCall("lak", "matmul_rows", ("g.reshape((n0 * nb, 8))", "w", f"{o}.reshape((n0 * nb, 3))"),
                   reads=("g", "w"), writes=(o,))


def test_products_of_one_operand_are_grouped_over_safe_code():
    code = ["        s[f0] += g[i0, ib, f0]"]              # reads g, writes s: neither blocks the move
    pieces = [OUTER(x="x", o="d1"), code, MATMUL(o="dx")]
    out, funcs = group_row_products(pieces, 5, "@jit")
    assert out[0].text().startswith("lak.row_products(rows_5, g.reshape") and out[1] == code and len(out) == 2
    assert out[0].reads == ("g", "x", "w") and out[0].writes == ("d1", "dx")
    (fn,) = funcs
    assert "def rows_5(a_, x0_, b1_, o1_, s0_, lo_, hi_, step_):" in fn
    assert sum("gk.dot_add(a_[c_:d_].T, x0_[c_:d_], s0_)" in ln for ln in fn) == 1
    assert "    s0_[...] = 0" in fn


def SUM(o: str) -> RunCall:
    """``lak.sum_rows(g, o, threads_)``: a bias gradient."""
    return RunCall("lak", "sum_rows", ("g.reshape((n0 * nb, 8))", o), reads=("g",), writes=(o,))


def test_a_sum_of_rows_joins_the_products_of_its_operand():
    pieces = [OUTER(x="x", o="d1"), SUM(o="db"), MATMUL(o="dx")]
    out, funcs = group_row_products(pieces, 5, "@jit")
    assert len(out) == 1 and out[0].writes == ("d1", "db", "dx") and out[0].reads == ("g", "x", "w")
    assert out[0].text() == ("lak.row_products(rows_5, g.reshape((n0 * nb, 8)), (x.reshape((n0 * nb, 3)), w, "
                             "dx.reshape((n0 * nb, 3)),), (d1, db,), threads_)")
    (fn,) = funcs
    assert "def rows_5(a_, x0_, b2_, o2_, s0_, s1_, lo_, hi_, step_):" in fn and "    s1_[...] = 0" in fn
    assert "                s1_[j_] += a_[r_, j_]" in fn
    pieces = [SUM(o="x"), OUTER(x="x", o="d1")]           # a product reading the sum is not moved before it
    assert group_row_products(pieces, 2, "@jit") == (pieces, [])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sum_rows_in_blocks(threads):
    rng = np.random.default_rng(0)
    g = rng.standard_normal((700, 6))
    out = np.full(6, np.nan)
    lak.sum_rows(g, out, threads)
    np.testing.assert_allclose(out, g.sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("blocker", [
    ["        w[f0] = 0.0"],                                # the code writes the later product's input
    ["        t = dx[0, 0]"],                               # ... or reads its output (buffers share storage)
    ["        gk.dot(h[i0], u, w[0:4])"],                   # a call may write any of its arguments
    ["        a, w = 1, 2"],                                # tuple targets
])
def test_a_product_is_not_moved_over_code_that_conflicts(blocker):
    pieces = [OUTER(x="x", o="d1"), blocker, MATMUL(o="dx")]
    out, funcs = group_row_products(pieces, 5, "@jit")
    assert out == pieces and funcs == []


def test_a_product_reading_another_ones_output_is_not_grouped():
    pieces = [MATMUL(o="dx"), OUTER(x="dx", o="d1")]
    assert group_row_products(pieces, 2, "@jit") == (pieces, [])
    pieces = [OUTER(x="x", o="d1"), MATMUL(o="x")]     # ... or writing what another one reads
    assert group_row_products(pieces, 2, "@jit") == (pieces, [])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("chunked", [True, False])
def test_grouped_products_equal_the_interpreter(cell, chunked, monkeypatch):
    """T·B = 555 rows: two blocks of 277 and 278 rows; chunks of 128 rows (the last one ragged) or none."""
    monkeypatch.setattr(lak, "MAX_SUM_BYTES", 2 ** 20 if chunked else 0)
    monkeypatch.setattr(lak, "CHUNK_BYTES", 1)           # tiny rows: chunks of MIN_CHUNK rows all the same
    m = CELLS[cell](3, 4)
    f = rc.compile(m, dtype="float64", wrt=[*m.graph.params, "x"])
    src = f.kernel("grad").source
    assert "lak.row_products(rows_" in src
    assert "+= a_[r_, j_]" in src                        # the bias gradients ride along (lak.sum_rows)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((37, 15, 3))
    assert lak.chunk_rows(np.zeros((555, 16)), (np.zeros((16, 4)),)) == (lak.MIN_CHUNK if chunked else 555)
    inputs = {"x": x, "y": rng.standard_normal((37, 15, 4))}
    assert_grads_match(f, m, inputs, m.init_params(5, "float64"), 1e-10, wrt=[*m.graph.params, "x"])


def test_other_blocks_partial_sums_are_allocated_once_per_output():
    """outer_rows in two row blocks: block 1's partial sum is one array, reused by every call with the same
    output buffer and dropped with it."""
    rng = np.random.default_rng(0)
    g, x = rng.standard_normal((300, 5)), rng.standard_normal((300, 3))
    out = np.empty((5, 3))
    lak.outer_rows(g, x, out, 2)
    spare = lak._SPARES[id(out)]
    first = spare[0]
    assert len(spare) == 1 and first.shape == out.shape
    for _ in range(3):
        out[...] = np.nan
        lak.outer_rows(g, x, out, 2)
        np.testing.assert_allclose(out, g.T @ x, rtol=1e-12)
    assert lak._SPARES[id(out)][0] is first and len(lak._SPARES[id(out)]) == 1
    key = id(out)
    del out
    assert key not in lak._SPARES
