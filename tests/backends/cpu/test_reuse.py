"""Buffers sharing the storage of dead ones (rnnc/backends/cpu/reuse.py): the same bits as buffers of their own,
from buffers that start as NaN, and the LSTM's gradient kernel actually smaller. Hypothesis-drawn models are
compared with the interpreter here too (part of the differential suite, tests/boundscheck.py)."""
import os
import sys

import numpy as np
from hypothesis import Phase, given, settings
from paths import BENCHMARKS, CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)
sys.path.insert(0, str(BENCHMARKS))

from bptt_memory import lstm  # noqa: E402  (the LSTM whose memory docs/bptt.md reports)
from compiled_check import assert_grads_match, close  # noqa: E402
from random_models import build, inputs_for, params_for, specs  # noqa: E402

import rnnc as rc  # noqa: E402
from rnnc.backends.cpu.emit import BATCH  # noqa: E402
from rnnc.backends.cpu.rendered import BufSpec  # noqa: E402
from rnnc.backends.cpu.reuse import live_ranges, share_dead  # noqa: E402


def reused(kernel) -> set:
    """Vars of buffers that take another one's storage (views of a base without lagged entries)."""
    extra = {b.var: b.extra for b in kernel.layout.buffers}
    return {b.var for b in kernel.layout.buffers if b.view and not extra[b.view[0]]}


def unshare(kernel) -> None:
    """Give every buffer storage of its own again (the same module: sharing is only the buffer plan)."""
    mine = reused(kernel)
    kernel.layout.buffers = [BufSpec(b.var, b.dims, b.shape, b.kind, b.extra, ()) if b.var in mine else b
                             for b in kernel.layout.buffers]
    kernel._buffers.clear()


def poison(kernel) -> None:
    """Fill every work buffer with NaN (integers with 1): nothing may rely on a buffer starting zeroed."""
    for bufs in kernel._buffers.values():
        for arr in bufs.values():
            arr.fill(np.nan if arr.dtype.kind == "f" else 1)


def same(a, b) -> None:
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]), equal_nan=True)
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert np.array_equal(a[1][k], b[1][k], equal_nan=True), k


def check(f, data, params, variant="grad") -> set:
    """loss_and_grad with shared buffers, again from NaN-filled ones, and with unshared ones: the same bits."""
    first = f.loss_and_grad(data, params)
    kernels = {name: k for name, k in f._kernels.items() if name == variant or name.startswith("segment")}
    shared = set().union(*(reused(k) for k in kernels.values()))
    for k in kernels.values():
        poison(k)
    same(first, f.loss_and_grad(data, params))
    for k in kernels.values():
        unshare(k)
    same(first, f.loss_and_grad(data, params))
    return shared


@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(specs())
def test_random_models_agree_and_give_the_same_bits_with_and_without_shared_buffers(s):
    """A model drawn by the shared generator (tests/random_models.py): compiled outputs, loss and gradients equal
    the interpreter's (float64, 1e-10); then the same bits from NaN-filled buffers and from unshared ones. (One
    test, so each drawn model is compiled once: it was two tests drawing ten models, four of them for the
    comparison with the interpreter, which test_backend_cpu.py held.)"""
    m = build(s)
    rng = np.random.default_rng(s["seed"])
    data, params = inputs_for(m, s, rng), params_for(m, rng)
    f = rc.compile(m, dtype="float64")
    out = f.forward(data, params)
    ref = rc.interpret(m, data, params)
    for k, v in ref.outputs.items():
        assert close(out.outputs[k], v, 1e-10), k
    assert_grads_match(f, m, data, params, 1e-10)
    check(f, data, params)
    k = f.kernel("outputs")
    poison(k)
    again = f.forward(data, params)
    assert out.outputs.keys() == again.outputs.keys()
    assert all(np.array_equal(out.outputs[n], again.outputs[n]) for n in out.outputs)


def test_lstm_gradient_kernel_reuses_the_input_products_storage():
    """The LSTM's input products ``U @ x[t]`` (4H per step) are dead after the forward scan and the gates'
    adjoints (4H per step) are born in the reverse scan: one array of (T, B, 4H) less. With checkpointing, the
    segment kernel also keeps ``d_h``, ``d_c`` per step no more (two (k, B, H) arrays less)."""
    T, B, inputs, H = 30, 3, 5, 8
    m = lstm(inputs, H, 4)
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(T, B, inputs)), "y": rng.integers(0, 4, size=(T, B))}
    params = m.init_params(0, "float64")
    f = rc.compile(m, dtype="float64")
    assert check(f, data, params)                            # leaves f's kernels unshared
    unshared = f.kernel("grad").stats["buffer_bytes"]
    g = rc.compile(m, dtype="float64")
    g.loss_and_grad(data, params)
    shared = g.kernel("grad").stats["buffer_bytes"]
    assert unshared - shared >= T * B * 4 * H * 8

    stored = {b.var for b in g.kernel("grad").layout.buffers if b.dims and b.dims[0] != BATCH}
    assert not {v for v in stored if v.endswith(("_d_h", "_d_c"))}         # adjoints d_h, d_c: step buffers

    seg = rc.compile(m, dtype="float64", checkpoint=T)       # one segment: the whole sequence
    seg.loss_and_grad(data, params)
    stored = {b.var for b in seg._kernels["segment_grad"].layout.buffers if b.dims and b.dims[0] != BATCH}
    assert not {v for v in stored if v.endswith(("_d_h", "_d_c"))}         # only d_h[t-1], d_c[t-1] per step
    assert check(seg, data, params, "segment_grad")


def test_share_dead_follows_the_statements_of_run():
    """Live ranges over ``run``'s statements (what each names, as ``module.statement_uses`` lists them)."""
    uses = [frozenset(s) for s in ({"f", "x0", "v1"}, {"g", "v1", "v2"}, {"h", "v2", "v3"}, {"k", "v3", "v4"})]
    assert live_ranges(uses, {"v1", "v2", "v3", "v4"}) == {"v1": (0, 1), "v2": (1, 2), "v3": (2, 3), "v4": (3, 3)}
    a = ("T",)
    specs_ = [BufSpec(v, a, (4,)) for v in ("v1", "v2", "v3", "v4")] + [BufSpec("v5", a, (4,))]
    out = {b.var: b.view for b in share_dead(specs_, uses, pinned={"v4"})}
    # v3 takes v1's storage (v1 died in g); v2 and v3 meet in h; v4 is read after run; v5 is never named
    assert out == {"v1": (), "v2": (), "v3": ("v1", 0), "v4": (), "v5": ()}


def test_statement_uses_come_from_the_modules_parts_not_its_text():
    """The uses the renderer hands to ``share_dead`` are ``run``'s statements in order: one per prologue
    statement, stage function (its parameters) and call of ``run``'s own; a stage function's entry is exactly
    its parameter list."""
    from rnnc.backends.cpu.module import statement_uses
    from rnnc.backends.cpu.pieces import RunCall, StageFunction

    fn = StageFunction("stage_2", "blocks", "scan", ("n0", "v3", "v4"), ("    pass",))
    call = RunCall("lak", "matmul_rows", ("x0.reshape((n0 * nb, 8))", "u1", "v3"), reads=("x0", "u1"),
                   writes=("v3",))
    uses = statement_uses(["    # transposed", "    np.copyto(u1, p1.T)"], [(1, [call]), (2, [fn])],
                          {1: ["    v5[:] = v3[0]"]})
    assert uses == [{"np", "copyto", "u1", "p1", "T"}, {"lak", "matmul_rows", "x0", "reshape", "n0", "nb", "u1",
                                                        "v3", "threads_"},
                    {"v5", "v3"}, {"n0", "v3", "v4"}]
