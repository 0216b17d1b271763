"""Row-local scans run as row blocks of the batch, one per thread (``_blocks(stage_k, ...)`` in generated
code), and the map stages' products as row blocks too (``rnnc.backends.cpu.kernels_linalg``): the results equal the
interpreter's with a batch that is dealt into blocks of unequal size, and the blocking does not change them."""
from __future__ import annotations

import os
import re

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import BENCHMARKS, CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

from compiled_check import ZOO_NAMES, assert_grads_match, close, compiled  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc.backends.cpu import kernels_linalg as lak  # noqa: E402

T, B = 4, 9           # nine rows: two blocks of 4 and 5 rows on two threads
TWO = min(2, numba.config.NUMBA_NUM_THREADS)


def _everything(case):
    """Every param and every float input: the adjoints of the inputs come out of the split scans too."""
    floats = [n for n, v in case.model.graph.inputs.items() if v.dtype != "int" and v.op == "input"]
    return [*case.model.graph.params, *floats]


def _check(case, f, wrt=None):
    inputs = case.make_inputs(np.random.default_rng(3), T, B, np.float64)
    params = case.params(seed=3)
    assert f.kernel("grad").blas_threads(B)["split"] == TWO
    assert_grads_match(f, case.model, inputs, params, 1e-10, wrt=wrt)
    ref = rc.interpret(case.model, inputs, params, dtype="float64")
    out = f.forward(inputs, params)
    for key, v in ref.outputs.items():
        assert close(out.outputs[key], v, 1e-10), key


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_split_scans_equal_interpreter(name):
    """Every zoo model's kernels (shared with test_backend_cpu, so nothing compiles twice) on nine rows."""
    case, f = compiled(name, "float64")
    _check(case, f)


@pytest.mark.parametrize("name", ["lstm", "gru", "bidirectional", "variable_length", "renet"])
def test_input_gradients_through_split_scans(name):
    """dL/dx as well: the input adjoints come out of the split reverse scans."""
    case, _ = compiled(name, "float64")
    wrt = _everything(case)
    _check(case, rc.compile(case.model, dtype="float64", wrt=wrt), wrt)


@pytest.mark.parametrize("name", ["lstm", "gru", "bidirectional", "renet"])
def test_recurrent_scans_are_split(name):
    """The gated cells' and the ReNet sweeps' scans are row-local: every one runs in row blocks."""
    case, f = compiled(name, "float64")
    src = f.kernel("grad").source
    scans = _stage_names(src, lambda body: "for s_ in range(" in body)
    assert scans and all(f"    _blocks({name}, parts_, nb," in src for name in scans)
    assert src.count("parts_ = _threads('split')") == src.count("    _blocks(stage_")


def _stage_names(src, keep):
    """Names of the generated stage functions whose body passes ``keep``."""
    chunks = src.split("\ndef ")[1:]
    return [c.split("(", 1)[0] for c in chunks if c.startswith("stage_") and keep(c.split("\n\n\n", 1)[0])]


def test_map_stage_elementwise_runs_in_row_blocks():
    """A map stage's row-local run (the LSTM's gate derivatives, the loss's dL/dh) is a function of its own,
    called in row blocks; its batch reductions (the loss's sum over the batch) stay whole."""
    _, f = compiled("lstm", "float64")
    src = f.kernel("grad").source
    split = _stage_names(src, lambda body: "b0_, b1_" in body and "for s_ in range(" not in body)
    whole = _stage_names(src, lambda body: "range(nb)" in body)
    assert split and whole
    assert all(f"    _blocks({name}, parts_, nb," in src for name in split)
    assert not any(f"_blocks({name}," in src for name in whole)


def test_blocks_do_not_change_results():
    """One block or two: the same numbers (each row's arithmetic is the same in any block)."""
    case, _ = compiled("lstm", "float64")
    inputs = case.make_inputs(np.random.default_rng(4), 6, 11, np.float64)
    params = case.params(seed=4)
    one = rc.compile(case.model, dtype="float64", threads=1).loss_and_grad(inputs, params)
    two = rc.compile(case.model, dtype="float64", threads=2).loss_and_grad(inputs, params)
    assert close(one[0], two[0], 1e-13)
    for key in one[1]:
        assert close(one[1][key], two[1][key], 1e-13), key


def test_batch_too_small_to_split_runs_as_one_block():
    case, f = compiled("gru", "float64")
    k = f.kernel("grad")
    assert k.blas_threads(1)["split"] == 1 and k.blas_threads(7)["split"] == 1
    inputs = case.make_inputs(np.random.default_rng(5), 3, 1, np.float64)
    params = case.params(seed=5)
    assert_grads_match(f, case.model, inputs, params, 1e-10)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 300), k=st.integers(1, 40), n=st.integers(1, 40), threads=st.integers(1, 4),
       transposed=st.booleans())
def test_row_block_products_equal_numpy(rows, k, n, threads, transposed):
    rng = np.random.default_rng(rows * 7 + k)
    a, g = rng.standard_normal((rows, k)), rng.standard_normal((rows, n))
    b = rng.standard_normal((n, k)).T if transposed else rng.standard_normal((k, n))
    out = np.full((rows, n), np.nan)
    lak.matmul_rows(a, b, out, threads)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    acc = np.full((n, k), np.nan)
    lak.outer_rows(g, a, acc, threads)
    np.testing.assert_allclose(acc, g.T @ a, rtol=1e-12, atol=1e-12)


def test_run_blocks_covers_every_row_once_and_raises_a_blocks_error():
    from rnnc.backends.cpu.blocks import run_blocks

    seen = np.zeros(23, np.int64)

    def mark(out, lo, hi):
        out[lo:hi] += 1

    for parts in (1, 2, 3, 5):
        seen[:] = 0
        run_blocks(mark, parts, 23, seen)
        assert (seen == 1).all()

    def fail(lo, hi):
        if lo > 0:
            raise ValueError(f"block {lo}:{hi}")

    with pytest.raises(ValueError, match="block"):
        run_blocks(fail, 2, 10)


def test_run_calls_from_several_threads_at_once():
    """Callers on several threads at once all get their blocks run (one holds the workers, the others run
    theirs on their own thread), and every caller's error stays its own."""
    import threading

    from rnnc.backends.cpu.blocks import run_blocks

    results, errors = {}, []

    def caller(k):
        try:
            seen = np.zeros(40, np.int64)
            for _ in range(50):
                run_blocks(lambda out, lo, hi: out.__setitem__(slice(lo, hi), out[lo:hi] + 1), 3, 40, seen)
            results[k] = seen
        except BaseException as e:     # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors and sorted(results) == [0, 1, 2, 3]
    assert all((seen == 50).all() for seen in results.values())


def test_split_scans_float32():
    """float32 kernels (vectorised tanh / sigmoid helpers) on nine rows: 1e-4 of the float64 interpreter."""
    case, f = compiled("lstm", "float32")
    inputs = case.make_inputs(np.random.default_rng(6), T, B, np.float64)
    params = case.params(seed=6)
    assert_grads_match(f, case.model, inputs, params, 1e-4)


def test_run_blocks_after_fork():
    """A forked child (multiprocessing's default on Linux) gets its own worker threads instead of waiting forever
    on the parent's, which do not exist in the child."""
    import multiprocessing as mp

    from rnnc.backends.cpu.blocks import run_blocks

    seen = np.zeros(8, np.int64)
    run_blocks(lambda out, lo, hi: out.__setitem__(slice(lo, hi), 1), 2, 8, seen)     # the parent's pool
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_count_in_blocks).get(timeout=60) == 8


def _count_in_blocks() -> int:
    from rnnc.backends.cpu.blocks import run_blocks

    seen = np.zeros(8, np.int64)
    run_blocks(lambda out, lo, hi: out.__setitem__(slice(lo, hi), 1), 2, 8, seen)
    return int(seen.sum())


def test_stacked_adjoints_feed_the_scan_products_in_place():
    """The LSTM's gate adjoints are written straight into the stack the weight gradients read (a placed
    concat), and the reverse scan's product reads them there (the whole stack, one merged product, or strided
    views of it, one product per gate): no copy stage. The scan's one other product is the output layer's
    ``V' dz``, per step (``rnnc.backends.cpu.sink``)."""
    _, f = compiled("lstm", "float64")
    src = f.kernel("grad").source
    reverse = src[src.index("scan over t, reverse"):]
    reverse = reverse[:reverse.index("return 0")]
    written = re.findall(r"(\w+)\[i0, ib, f0(?: \+ \d+)?\] = e", reverse)
    stack = max(set(written), key=written.count)
    reads = re.findall(rf"gk\.dot\(({stack})\[i0, b0_:b1_(?:, (\d+):(\d+))?\]", reverse)
    assert len(re.findall(r"gk\.dot\(", reverse)) - len(reads) == 1     # V' dz
    assert len(reads) == 1 and not reads[0][1] or sorted(int(lo) for _, lo, _ in reads) == [0, 4, 8, 12]
    assert re.search(rf"lak\.(?:outer_rows\(|row_products\(rows_\w+, ){stack}\.reshape", src)  # weight grads
    assert sorted(re.findall(rf"{stack}\[i0, ib, f0(?: \+ (\d+))?\] = e", reverse)) == ["", "12", "4", "8"]
    assert not re.search(rf"{stack}\[i0, ib, f0( \+ \d+)?\] = \w+\[i0, ib, f0\]", src)   # no copy into it


def test_gru_stacks_its_adjoints_twice_with_one_copy():
    """The benchmark's GRU stacks the same gate adjoints twice, in two orders (input and recurrent weight
    gradients): the first stack is written in place by the reverse scan, only the second is a copy; the
    gradients still equal the interpreter's."""
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    from cells import CELLS

    m = CELLS["gru"](3, 4)
    f = rc.compile(m, dtype="float64", wrt=[*m.graph.params, "x"])
    src = f.kernel("grad").source
    stacks = set(re.findall(r"lak\.(?:outer_rows\(|row_products\(rows_\w+, )(\w+)\.reshape", src))  # weight gradients
    copies = set(re.findall(r"# (\w+) = concat\(.*\n(?: .*\n)*? +\1\[i0, ib, f0[^\]]*\] = ", src))
    assert len(stacks) == 2 and len(copies) == 1 and copies < stacks
    rng = np.random.default_rng(7)
    inputs = {"x": rng.standard_normal((T, B, 3)), "y": rng.standard_normal((T, B, 4))}
    assert_grads_match(f, m, inputs, m.init_params(7, "float64"), 1e-10, wrt=[*m.graph.params, "x"])
