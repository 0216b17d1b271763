"""A cache that cannot run someone else's code (issue 18, part 4).

The cache folder is created private (0700). A folder someone else could write (another user's, or one its group
or everyone may write), or one that cannot be written, is refused with a one-line ``RuntimeWarning`` naming it
and why, and rnnc compiles in a private temporary folder instead, writing nothing to the refused one. Entry files
that are not this user's are never imported. Numba's files for rnnc's own helpers go to the cache folder, never
into the installed package.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cache_cases import SRC, TINY, run_tiny, tiny
from paths import REPO

import rnnc as rc
from rnnc.backends.cache import load, lookup, store, trusted, usable_dir

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PACKAGE = Path(rc.__file__).parent


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _refused(folder: Path, why: str, run: bool = False) -> None:
    """Compiling with ``RNNC_CACHE_DIR=folder`` warns once, in one line, naming the folder and ``why``; the model
    still compiles (and with ``run``, runs), and nothing is written to ``folder``."""
    before = sorted(os.listdir(folder)) if folder.is_dir() else None
    with pytest.warns(RuntimeWarning) as record:
        f = rc.compile(tiny(0.5), dtype="float64")
        assert "def run(" in f.source
        if run:
            x = np.ones((3, 2, 2))
            out = f.forward({"x": x}, {}).outputs["o"]
            np.testing.assert_allclose(out, rc.interpret(tiny(0.5), {"x": x}, {}, dtype="float64").outputs["o"])
    messages = {str(w.message) for w in record if issubclass(w.category, RuntimeWarning)}
    mine = [m for m in messages if str(folder) in m]
    assert mine and all(why in m and "\n" not in m and "is not used" in m for m in mine), messages
    assert not str(f.kernel("outputs").path).startswith(str(folder))
    if before is not None:
        assert sorted(os.listdir(folder)) == before                 # nothing written there


def test_folder_is_created_private(tmp_path, monkeypatch):
    folder = tmp_path / "home" / "cache"
    monkeypatch.setenv("RNNC_CACHE_DIR", str(folder))
    old = os.umask(0)                                # even with nothing masked
    try:
        path, hit = store(SRC)
    finally:
        os.umask(old)
    assert not hit and path.parent == folder
    assert _mode(folder) == 0o700 and _mode(path) == 0o600 and trusted(path)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777], ids=oct)
def test_group_or_world_writable_folder_is_refused(tmp_path, monkeypatch, mode):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    monkeypatch.setenv("RNNC_CACHE_DIR", str(folder))
    _refused(folder, "group or everyone may write it", run=mode == 0o777)


@pytest.mark.skipif(not ROOT, reason="giving a folder to another user needs root")
def test_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    monkeypatch.setenv("RNNC_CACHE_DIR", str(folder))
    _refused(folder, "belongs to another user (uid 65534")


def test_a_file_in_place_of_the_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    for folder, why in ((tmp_path / "file", "is not a folder"), (tmp_path / "file" / "sub", "cannot be created")):
        monkeypatch.setenv("RNNC_CACHE_DIR", str(folder))
        _refused(folder, why)
    assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.skipif(ROOT, reason="root writes into a 0500 folder: see the read-only mount test")
def test_empty_read_only_folder_falls_back(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    monkeypatch.setenv("RNNC_CACHE_DIR", str(folder))
    _refused(folder, "cannot be written")


def test_empty_read_only_mount_falls_back(tmp_path):
    """An empty folder no one can write, root included (a read-only bind mount in a private mount namespace):
    the compile warns and runs in a private temporary folder, instead of a raw ``OSError``."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -rm (user and mount namespaces) for a read-only mount")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o700)
    script = TINY + "print(err)\n"
    mount = f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} {folder}"
    env = dict(os.environ, RNNC_CACHE_DIR=str(folder), PYTHONWARNINGS="always")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f'{mount} && exec "$0" -c "$1"', sys.executable, script],
                          env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    if "mount" in done.stderr and done.returncode:
        pytest.skip(f"no read-only bind mount here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 1e-12
    assert f"rnnc cache folder '{folder}' is not used: it cannot be written" in done.stderr
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not ROOT, reason="an entry owned by another user needs root to make")
def test_entries_of_another_user_are_not_imported(tmp_path):
    path, _ = store(SRC, tmp_path)
    key = path.stem.removeprefix("rnnc_")
    os.chown(path, 65534, 65534)
    assert lookup(key, tmp_path) == (path, None)                      # a miss: compiled and written again
    with pytest.raises(PermissionError, match="not this user's"):
        load(path)
    _, hit = store(SRC, tmp_path)
    assert not hit and trusted(path) and path.stat().st_uid == os.geteuid()


def test_entries_others_may_write_are_not_imported(tmp_path):
    path, _ = store(SRC, tmp_path)
    path.chmod(0o666)
    assert not trusted(path) and lookup(path.stem.removeprefix("rnnc_"), tmp_path) == (path, None)
    with pytest.raises(PermissionError, match="may be written by others"):
        load(path)
    _, hit = store(SRC, tmp_path)
    assert not hit and _mode(path) == 0o600


def test_a_private_folder_is_used_as_it_is(tmp_path):
    assert usable_dir(tmp_path) == tmp_path
    folder = tmp_path / "mine"
    folder.mkdir(mode=0o755)                                        # readable by others is fine
    assert usable_dir(folder) == folder


def _numba_files(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_numba_helper_files_go_to_the_cache_folder_not_the_package(tmp_path):
    """A compile in a fresh process (products through ``gemm``): Numba's files for rnnc's helpers are written under
    ``<cache>/helpers``, and none is written or rewritten inside the rnnc package."""
    before = _numba_files(PACKAGE)
    script = textwrap.dedent("""
        import rnnc.backends.cpu.gemm as g, rnnc.backends.cpu.kernels_linalg as kl
        kinds = {type(v._cache._impl.locator).__name__ for mod in (g, kl) for v in vars(mod).values()
                 if hasattr(getattr(v, "_cache", None), "_impl")}
        print(err, *sorted(kinds))
    """)
    words = run_tiny(script, tmp_path)
    assert float(words[0]) < 1e-12 and words[1:] == ["HelperLocator"]
    helpers = _numba_files(tmp_path / "helpers")
    assert any("gemm." in p.name for p in helpers), sorted(helpers)
    after = _numba_files(PACKAGE)
    assert {p for p, t in after.items() if before.get(p) != t} == set()
