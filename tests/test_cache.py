"""The generated-module cache: content-hashed, verified, atomic, rebuilt when corrupt, shared by processes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from rnnc.backends.cache import entry_text, load, store, verify

SRC = "import numba\n\n@numba.njit(cache=True)\ndef run(a):\n    return a + 1\n"


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
    script = textwrap.dedent(f"""
        import os, sys, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import rnnc as rc
        from zoo import ZOO
        case = ZOO["elman"]()
        f = rc.compile(case.model, dtype="float64")
        inp = case.make_inputs(np.random.default_rng(0), 3, 2, np.float64)
        print(repr(f.forward(inp, case.params()).loss), f.stats["loss"]["cache_hit"])
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
