"""A scan step's product on packed weights (rnnc/backends/cpu/kernels_packed.py, packed_layout.py): equal to
numpy's product on every shape and stride a step hands it, the same bits whatever block of rows it gets,
refused when the operands do not fit the panels, and used by compiled scans (then equal to the interpreter)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

from compiled_check import assert_matches_interpreter  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc import t  # noqa: E402
from rnnc.backends.cpu import kernels_packed as pk  # noqa: E402
from rnnc.backends.cpu.packed_layout import PANEL_WIDTH, pack_statement, packed_shape, packs  # noqa: E402

DTYPES = ["float32", "float64"]


def packed(b):
    """``b`` packed by the statement ``run()`` executes."""
    shape = packed_shape(*b.shape, b.dtype.name)
    out = np.full(shape, np.nan, b.dtype)
    exec(pack_statement("out", "b", shape), {"np": np}, {"out": out, "b": b})
    return out


def test_pack_statement_is_the_panel_layout():
    b = np.arange(5 * 64, dtype=np.float32).reshape(5, 64)
    bp = packed(b)
    assert bp.shape == (2, 5, 32) and bp.flags.c_contiguous
    for p in range(2):
        for q in range(5):
            assert np.array_equal(bp[p, q], b[q, 32 * p:32 * (p + 1)])


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), m=st.integers(0, 37), k=st.integers(1, 70), panels=st.integers(1, 3),
       lead=st.integers(0, 3), pad=st.integers(0, 5), add=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_equals_numpy_on_strided_rows(dtype, m, k, panels, lead, pad, add, seed):
    """Rows of A from a 3-D buffer at one index with spare columns, output columns of a wider buffer: the
    views a split scan's step passes; nothing outside the output's columns is written."""
    rng = np.random.default_rng(seed)
    n = panels * PANEL_WIDTH[dtype]
    a3 = rng.standard_normal((2, m + lead, k + pad)).astype(dtype)
    a = a3[1, lead:, :k]
    b = rng.standard_normal((k, n)).astype(dtype)
    wide = rng.standard_normal((m, n + 2 * pad)).astype(dtype)
    before = wide.copy()
    out = wide[:, pad:pad + n]
    (pk.dot_add if add else pk.dot)(a, packed(b), out)
    want = a.astype(np.float64) @ b.astype(np.float64) + (before[:, pad:pad + n] if add else 0)
    tol = 1e-4 if dtype == "float32" else 1e-12
    assert np.allclose(out, want, rtol=tol, atol=tol * np.sqrt(k))
    assert np.array_equal(wide[:, :pad], before[:, :pad]) and np.array_equal(wide[:, pad + n:], before[:, pad + n:])


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_do_not_depend_on_the_block(dtype):
    """A row's sum runs in one order whatever rows surround it: blocks of any size give the same bits (a split
    scan's result does not follow its thread count)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((29, 128)).astype(dtype)
    bp = packed(rng.standard_normal((128, 4 * PANEL_WIDTH[dtype])).astype(dtype))
    whole = np.empty((29, bp.shape[0] * bp.shape[2]), dtype)
    pk.dot(a, bp, whole)
    for cut in (1, 5, 8, 13, 16):
        parts = np.empty_like(whole)
        pk.dot(a[:cut], bp, parts[:cut])
        pk.dot(a[cut:], bp, parts[cut:])
        assert np.array_equal(parts, whole)


def test_operands_that_do_not_fit_are_refused():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 16)).astype(np.float32)
    bp = packed(rng.standard_normal((16, 64)).astype(np.float32))
    out = np.zeros((8, 64), np.float32)
    with pytest.raises(ValueError, match="packed panels"):
        pk.dot(a[:, :15], bp, out)                       # inner dimension
    with pytest.raises(ValueError, match="packed panels"):
        pk.dot(a, bp, out[:7])                           # rows
    with pytest.raises(ValueError, match="packed panels"):
        pk.dot(a, bp, out[:, :32])                       # columns
    with pytest.raises(ValueError, match="packed panels"):
        pk.dot(np.asfortranarray(a), bp, out)            # A's elements not contiguous
    with pytest.raises(ValueError, match="packed panels"):
        pk.dot(a, bp[:, ::2], out[:, :32])               # panels not contiguous
    with pytest.raises(ValueError, match="packed panels"):
        pk.dot(a.astype(np.float64), packed(rng.standard_normal((16, 64))), out.astype(np.float64)[:, :48])
    with pytest.raises(ValueError, match="multiple of the panel width"):
        packed_shape(16, 40, "float32")
    assert packs(64, "float32") and packs(48, "float64") and not packs(48, "float32")


def _lstm(hidden):
    m = rc.Model(f"lstm{hidden}")
    x, y = m.input("x", 6), m.input("y", hidden)
    h, c = m.signal("h", hidden), m.signal("c", hidden)
    gates = {g: m.param(f"U{g}", (hidden, 6)) @ x[t] + m.param(f"W{g}", (hidden, hidden)) @ h[t - 1]
             + m.param(f"b{g}", hidden) for g in "ifgo"}
    c[t] = rc.sigmoid(gates["f"]) * c[t - 1] + rc.sigmoid(gates["i"]) * rc.tanh(gates["g"])
    h[t] = rc.sigmoid(gates["o"]) * rc.tanh(c[t])
    m.output("out", h[t])
    m.loss(rc.mse(h[t], y[t]))
    return m


@pytest.mark.parametrize("dtype,hidden,uses", [("float32", 8, True), ("float64", 8, True), ("float32", 6, False)])
def test_compiled_scans_read_packed_weights(dtype, hidden, uses):
    """An LSTM's forward and reverse scans call ``pk.dot`` on weights the prologue packs (4H = 32 columns fill
    a float32 panel, two float64 ones; 4H = 24 does not, and the step stays on ``gk.dot``), and give what the
    interpreter gives, gradients included, on a batch that splits into row blocks."""
    m = _lstm(hidden)
    f = rc.compile(m, dtype=dtype)
    rng = np.random.default_rng(1)
    params = {name: 0.3 * rng.standard_normal(p.shape) for name, p in m.graph.params.items()}
    inputs = {"x": rng.standard_normal((7, 12, 6)), "y": rng.standard_normal((7, 12, hidden))}
    assert_matches_interpreter(f, m, inputs, params, 1e-4 if dtype == "float32" else 1e-10)
    for kind in ("outputs", "grad"):
        source = f.kernel(kind).source
        assert ("pk.dot(" in source) == uses
        assert ("in panels of" in source) == uses


LSTM8 = textwrap.dedent("""
    import numpy as np
    import rnnc as rc
    from rnnc import t
    from rnnc.backends.cpu import kernels_packed as pk
    m = rc.Model("lstm8")
    x, y = m.input("x", 6), m.input("y", 8)
    h, c = m.signal("h", 8), m.signal("c", 8)
    gates = {g: m.param(f"U{g}", (8, 6)) @ x[t] + m.param(f"W{g}", (8, 8)) @ h[t - 1] + m.param(f"b{g}", 8)
             for g in "ifgo"}
    c[t] = rc.sigmoid(gates["f"]) * c[t - 1] + rc.sigmoid(gates["i"]) * rc.tanh(gates["g"])
    h[t] = rc.sigmoid(gates["o"]) * rc.tanh(c[t])
    m.loss(rc.mse(h[t], y[t]))
    f = rc.compile(m, dtype="float32")
    rng = np.random.default_rng(1)
    params = {name: 0.3 * rng.standard_normal(p.shape) for name, p in m.graph.params.items()}
    loss, grads = f.loss_and_grad({"x": rng.standard_normal((5, 4, 6)), "y": rng.standard_normal((5, 4, 8))},
                                  params)
    assert "pk.dot(" in f.kernel("grad").source
    print(",".join(sorted(pk._ENTRIES)), f.kernel("grad").stats["cache_hit"], loss.hex())
""")


def test_a_kernel_compiles_the_packed_product_of_its_dtype_only(tmp_path):
    """A float32 kernel compiles (or loads) the float32 packed product and no float64 one; a new process that
    loads the kernel from the cache, its stage functions untyped, gets the function too (the module requires it
    on import) and the same loss to the bit."""
    env = dict(os.environ, RNNC_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", LSTM8], env=env, capture_output=True, text=True, timeout=600)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    (dtypes, hit, loss), (dtypes2, hit2, loss2) = (r.stdout.split() for r in runs)
    assert dtypes == dtypes2 == "float32"
    assert (hit, hit2) == ("False", "True") and loss == loss2
