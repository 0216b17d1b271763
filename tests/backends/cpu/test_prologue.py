"""run()'s prologue (rnnc/backends/cpu/prologue.py): unread results dropped, single-use transposes inlined."""
from __future__ import annotations

import sys

import numpy as np
from paths import REPO

sys.path.insert(0, str(REPO))
import rnnc as rc  # noqa: E402
from benchmarks.cells import CELLS  # noqa: E402
from rnnc.backends.cpu.prologue import PrologueEntry, prologue_lines  # noqa: E402

ENTRIES = [PrologueEntry("v2", "transpose", ("p1",)), PrologueEntry("v4", "transpose", ("p3",)),
           PrologueEntry("v6", "concat", ("v2", "v4")), PrologueEntry("v7", "transpose", ("v6",)),
           PrologueEntry("v8", "transpose", ("p5",)), PrologueEntry("v9", "concat", ("v8", "v2"))]


def test_single_use_transposes_are_inlined_and_unread_results_dropped():
    lines, dropped = prologue_lines(ENTRIES, {"gk", "a", "v6", "b"})
    # v6 is read by stage code; v7 and v9 by nothing (the names stage code uses, not its comments: see
    # test_prologue_reads_the_names_of_code_not_comments); v2 feeds two concats, v4 one
    assert [line.strip() for line in lines] == ["cp.transpose_into(p1, v2)", "cp.concat_last((v2, p3.T,), v6)"]
    assert dropped == {"v4", "v7", "v8", "v9"}


def test_everything_read_is_kept():
    lines, dropped = prologue_lines(ENTRIES, {"f", "v7", "v9"})
    assert dropped == {"v4", "v8"}
    assert [line.strip() for line in lines] == [
        "cp.transpose_into(p1, v2)", "cp.concat_last((v2, p3.T,), v6)", "cp.transpose_into(v6, v7)",
        "cp.concat_last((p5.T, v2,), v9)"]


def test_prologue_reads_the_names_of_code_not_comments():
    from rnnc.backends.cpu.pieces import names_used, names_written

    line = "    gk.dot(a, v6.T, b)  # v7 = matmul(v7, v9)"
    assert names_used([line]) == {"gk", "dot", "a", "v6", "T", "b"}      # attribute names too: a superset
    assert names_written([line]) == {"gk", "a", "v6", "b"}


def test_lstm_forward_stacks_its_gate_matrices_without_copies():
    m = CELLS["lstm"](3, 5)
    f = rc.compile(m, dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    params = m.init_params(0, "float64")
    out = f.forward({"x": x}, params).outputs["out"]
    np.testing.assert_allclose(out, rc.interpret(m, {"x": x}, params).outputs["out"], rtol=1e-12, atol=1e-12)
    src = f.kernel("outputs").source
    run = src[src.index("def run("):]
    assert run.count("cp.concat_last((p") == 2 and "np.copyto(" not in run      # U and W stacks, nothing else
    stacks = [b for b in f.kernel("outputs").layout.buffers if not b.dims and len(b.shape) == 2]
    assert sorted(b.shape for b in stacks) == [(3, 20), (5, 20)]        # no buffers for the dropped copies
