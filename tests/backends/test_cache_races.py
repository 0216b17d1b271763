"""Numba's cache under two processes at once: saves are serialised by a lock beside the index, and an entry
that holds another signature's code (what the race left behind) is a miss, not code called with wrong types."""
from __future__ import annotations

import errno
import fcntl
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from rnnc.backends.cache import tolerate_corrupt_entries

SOURCE = textwrap.dedent("""
    import numba

    @numba.njit(cache=True)
    def bump(x):
        return x + 1
""")

LOADER = textwrap.dedent("""
    import importlib.util, sys
    from rnnc.backends.cache import tolerate_corrupt_entries
    spec = importlib.util.spec_from_file_location("racy_{tag}", {path!r})
    mod = sys.modules["racy_{tag}"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tolerate_corrupt_entries(mod)
""")


def _module(tmp_path: Path, tag: str):
    path = tmp_path / f"racy_{tag}.py"
    path.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location(f"racy_{tag}", path)
    mod = sys.modules[f"racy_{tag}"] = importlib.util.module_from_spec(spec)   # Numba's entries name it
    spec.loader.exec_module(mod)
    tolerate_corrupt_entries(mod)
    return mod, path


def _run(path: Path, tag: str, body: str) -> list[str]:
    script = LOADER.format(tag=tag, path=str(path)) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_an_entry_holding_another_signatures_code_is_a_miss(tmp_path):
    mod, path = _module(tmp_path, "swap")
    assert mod.bump(1) == 2 and mod.bump(1.5) == 2.5          # two entries: racy_swap.bump-N.py3X.{1,2}.nbc
    data = sorted(path.parent.glob("__pycache__/racy_swap.bump-*.nbc"))
    assert len(data) == 2
    first, second = (p.read_bytes() for p in data)
    data[0].write_bytes(second)                               # what a lost race leaves: index entries naming
    data[1].write_bytes(first)                                # the other signature's data
    # a new process: each load finds code compiled for the other type, a miss, so it compiles again
    assert _run(path, "swap", """
        print(repr(mod.bump(1)), repr(mod.bump(1.5)), sum(mod.bump._cache_hits.values()))
    """) == ["2", "2.5", "0"]
    # the saves rewrote the entries; a third process loads both from the cache
    assert _run(path, "swap", """
        print(repr(mod.bump(1)), repr(mod.bump(1.5)), sum(mod.bump._cache_hits.values()))
    """) == ["2", "2.5", "2"]


def _lock_is_free(index: str, how: int) -> bool:
    fd = os.open(index + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except OSError as e:
        assert e.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
        return False
    finally:
        os.close(fd)


def test_a_save_holds_the_index_lock_and_a_load_shares_it(tmp_path):
    mod, _ = _module(tmp_path, "lock")
    cache_file = mod.bump._cache._cache_file
    index, seen = cache_file._index_path, {}
    save, load = cache_file.save, cache_file.load

    def probing_save(key, data):
        seen["save: another writer"] = _lock_is_free(index, fcntl.LOCK_EX)
        seen["save: a reader"] = _lock_is_free(index, fcntl.LOCK_SH)
        return save(key, data)

    def probing_load(key):
        seen["load: a writer"] = _lock_is_free(index, fcntl.LOCK_EX)
        seen["load: another reader"] = _lock_is_free(index, fcntl.LOCK_SH)
        return load(key)

    cache_file.save, cache_file.load = probing_save, probing_load
    assert mod.bump(3) == 4
    assert seen == {"load: a writer": False, "load: another reader": True,
                    "save: another writer": False, "save: a reader": False}
    assert _lock_is_free(index, fcntl.LOCK_EX)                # released after the call


def test_two_processes_filling_one_cold_cache_leave_entries_a_third_loads(tmp_path):
    """Two processes compile the same function for six argument types, in opposite orders, at once; a third
    process then loads every entry and gets each type's own result."""
    _, path = _module(tmp_path, "cold")
    for p in path.parent.glob("__pycache__/*"):
        p.unlink()
    types = ["1", "1.5", "True", "np.int32(1)", "np.float32(1.5)", "np.uint8(1)"]
    body = "import numpy as np\nfor v in {order}:\n    print(type(mod.bump(eval(v))).__name__)\n"
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", LOADER.format(tag="cold", path=str(path))
                               + body.format(order=order)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for order in (types, types[::-1])]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    third = _run(path, "cold", "import numpy as np\n" + "\n".join(
        f"r = mod.bump({v}); print(type(r).__name__, repr(float(r)))" for v in types)
        + "\nprint(sum(mod.bump._cache_hits.values()))")
    assert third[:-1] == ["int", "2.0", "float", "2.5", "int", "2.0", "int", "2.0", "float", "2.5", "int", "2.0"]
    assert third[-1] == "6"                                 # every entry loaded, none compiled again
