"""The generated-module cache: content-hashed, verified, atomic, rebuilt when corrupt, shared by processes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from cache_cases import SRC, run_tiny, tiny

from rnnc.backends.cache import entry_text, load, store, verify


def test_store_then_hit(tmp_path):
    path, hit = store(SRC, tmp_path)
    assert not hit and path.exists() and verify(path.read_text())
    path2, hit2 = store(SRC, tmp_path)
    assert hit2 and path2 == path
    assert load(path).run(1) == 2


def test_key_depends_on_source(tmp_path):
    assert entry_text(SRC)[0] != entry_text(SRC + "# x\n")[0]


def test_corrupt_or_truncated_entry_is_rebuilt(tmp_path):
    path, _ = store(SRC, tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])                 # truncated
    assert not verify(path.read_text())
    _, hit = store(SRC, tmp_path)
    assert not hit and path.read_text() == text
    path.write_text(text.replace("a + 1", "a + 2"))         # tampered body, stale footer
    _, hit = store(SRC, tmp_path)
    assert not hit and path.read_text() == text


def test_no_temp_files_left(tmp_path):
    store(SRC, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_two_processes_compile_the_same_model(tmp_path):
    # the smallest recurrent model with a loss (the point is concurrency, not the model: keep compiles cheap)
    script = textwrap.dedent("""
        import numpy as np
        import rnnc as rc
        from rnnc import t
        m = rc.Model("tiny")
        x, y = m.input("x", 2), m.input("y", 2)
        h = m.signal("h", 2)
        h[t] = rc.tanh(x[t] + h[t - 1] * 0.5)
        m.output("o", h[t])
        m.loss(rc.mse(h[t], y[t]))
        f = rc.compile(m, dtype="float64")
        rng = np.random.default_rng(0)
        inp = {"x": rng.normal(size=(3, 2, 2)), "y": rng.normal(size=(3, 2, 2))}
        print(repr(f.forward(inp, {}).loss), f.stats["loss"]["cache_hit"])
    """)
    env = dict(os.environ, RNNC_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    losses = {o[0].split()[0] for o in outs}
    assert len(losses) == 1
    third = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and third.stdout.split()[1] == "True"     # a later process hits the cache




def test_structural_key_finds_module_before_passes(tmp_path, monkeypatch):
    from rnnc.runtime.graph_key import graph_key
    from rnnc.runtime.kernel import Kernel

    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path))
    g = tiny(0.5).graph
    assert graph_key(g, "float64") == graph_key(tiny(0.5).graph, "float64")     # stable for equal graphs
    assert graph_key(g, "float64") != graph_key(tiny(0.25).graph, "float64")    # a constant changes it
    assert graph_key(g, "float64") != graph_key(g, "float32")
    first = Kernel(g, "float64")
    assert not first.stats["cache_hit"] and first._graph is not None
    second = Kernel(tiny(0.5).graph, "float64")
    assert second.stats["cache_hit"] and second._graph is None                   # passes + rendering skipped
    assert second.path == first.path and second.source == first.source
    first.path.write_text(first.path.read_text().replace("np.tanh", "np.exp").replace("math.tanh", "math.exp"))
    third = Kernel(tiny(0.5).graph, "float64")                                  # tampered: rebuilt, not trusted
    assert not third.stats["cache_hit"] and verify(third.path.read_text())
    assert "math.tanh" in third.source


#: a tiny Elman model compiled in float64 in a fresh process; ``err`` is its largest difference from the
#: interpreter's outputs


def test_numba_blas_loads_without_scipy_linalg(tmp_path):
    """Numba's ``np.dot`` needs ``scipy.linalg.cython_blas``; rnnc loads that one module (``scipy.linalg``'s
    package imports cost 0.25 s of a cached load) and limits its threads like numpy's BLAS."""
    script = """
        from threadpoolctl import threadpool_info
        blas = [i["filepath"] for i in threadpool_info() if i["user_api"] == "blas"]
        print(err, "scipy.linalg" in sys.modules, "scipy.linalg.cython_blas" in sys.modules,
              any("scipy" in b for b in blas))
    """
    for _ in range(2):                                   # cold, then loaded from the cache
        err, linalg, blas, seen = run_tiny(script, tmp_path)
        assert float(err) < 1e-12 and (linalg, blas, seen) == ("False", "True", "True")


def test_corrupt_numba_entries_are_compiled_again(tmp_path):
    """Numba's own entries under the cache folder (a truncated ``.nbc``, a corrupt ``.nbi``) are misses: the
    stage compiles again and rewrites them; the next process loads them."""
    def run():
        assert float(run_tiny("print(err)", tmp_path)[-1]) < 1e-12

    run()
    data = sorted((tmp_path / "__pycache__").glob("*.nbc"))
    index = sorted((tmp_path / "__pycache__").glob("*.nbi"))
    assert data and index
    data[0].write_bytes(data[0].read_bytes()[:40])
    index[-1].write_bytes(b"\x80\x04garbage")
    run()
    assert len(data[0].read_bytes()) > 40 and index[-1].read_bytes() != b"\x80\x04garbage"
    run()


def test_a_helper_cache_entry_is_stale_when_a_helper_it_calls_changes(tmp_path):
    """Compiled helpers hold the code of the helpers they call (``gk.dot``'s call of gemm's external function by
    name): a cached ``kernels_linalg`` function must be rebuilt when ``gemm.py`` changes, else it would call a
    function by an old name or signature (a segfault), and Numba checks only the caller's own file."""
    from rnnc.backends.cache import HelperLocator

    for name in ("gemm.py", "kernels_linalg.py", "render.py", "packed_layout.py", "kernels_packed.py",
                 "conv_columns.py", "njit.py"):
        (tmp_path / name).write_text(f"# {name}\n")

    def stamp():
        return HelperLocator(test_a_helper_cache_entry_is_stale_when_a_helper_it_calls_changes,
                             str(tmp_path / "kernels_linalg.py"), tmp_path).get_source_stamp()

    before = stamp()
    (tmp_path / "render.py").write_text("# render.py, changed: no compiled helper holds its code\n")
    assert stamp() == before
    (tmp_path / "gemm.py").write_text("# gemm.py, changed\n")
    after_gemm = stamp()
    assert after_gemm != before
    (tmp_path / "kernels_linalg.py").write_text("# its own file, changed\n")
    after_own = stamp()
    assert after_own not in (before, after_gemm)
    (tmp_path / "packed_layout.py").write_text("# the panel width the packed kernel checks, changed\n")
    after_layout = stamp()
    assert after_layout != after_own
    (tmp_path / "kernels_packed.py").write_text("# the packed step kernel, changed\n")
    after_packed = stamp()
    assert after_packed != after_layout
    # kernels_conv's functions compile conv_columns' in, and njit.py holds every helper's compile options
    (tmp_path / "conv_columns.py").write_text("# the im2col columns, changed\n")
    after_columns = stamp()
    assert after_columns != after_packed
    (tmp_path / "njit.py").write_text("# the decorators' options, changed\n")
    assert stamp() != after_columns


def _trained(decay: float):
    """``h[t] = tanh(W x[t] + decay h[t-1])`` with an MSE loss: a model with a gradient kernel."""
    import rnnc as rc
    from rnnc import t

    m = rc.Model("trained")
    x, y = m.input("x", 2), m.input("y", 2)
    W = m.param("W", (2, 2))
    h = m.signal("h", 2)
    h[t] = rc.tanh(W @ x[t] + h[t - 1] * decay)
    m.loss(rc.mse(h[t], y[t]))
    return m


def test_a_gradient_kernel_is_found_whatever_the_process_built_before(tmp_path, monkeypatch):
    """A gradient graph keeps its forward graph in ``meta["forward"]``; keying it by ``repr`` (node names count
    every node the process ever made) gave the same model a new key after any other model was built, so its
    gradient kernel compiled again in every script that built things in another order."""
    import rnnc as rc
    from rnnc.runtime.graph_key import graph_key

    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path))
    first = rc.grad(_trained(0.5)).graph
    rc.grad(_trained(0.25))                                          # other nodes in between
    again = rc.grad(_trained(0.5)).graph
    assert graph_key(first, "float64") == graph_key(again, "float64")
    assert graph_key(first, "float64") != graph_key(rc.grad(_trained(0.25)).graph, "float64")
    f = rc.compile(_trained(0.5), dtype="float64").kernel("grad")
    rc.compile(_trained(0.25), dtype="float64").kernel("grad")
    g = rc.compile(_trained(0.5), dtype="float64").kernel("grad")
    assert not f.stats["cache_hit"] and g.stats["cache_hit"] and g.path == f.path
