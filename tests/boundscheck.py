"""Run the differential suite (compiled kernels against the interpreter) with Numba's bounds checking on.

    python tests/boundscheck.py                      # the differential files, below
    python tests/boundscheck.py tests/backends/cpu/test_backend_cpu.py -k step

Every array access in every compiled kernel then raises ``IndexError`` instead of reading or writing out of
bounds. ``NUMBA_BOUNDSCHECK=1`` must be set before Numba is imported, so the tests run in a new process. Its
builds are kept apart from normal ones: rnnc's cache keys include the flag (:mod:`rnnc.runtime.graph_key`), and
the generated modules and Numba's own cache files go to their own folders (``$RNNC_BOUNDSCHECK_CACHE``,
default ``~/.cache/rnnc-boundscheck``), so a checked build is never loaded by a normal run, nor the reverse.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from paths import REPO as ROOT

DIFFERENTIAL = ["tests/interpret/test_random_graphs.py", "tests/backends/cpu/test_backend_cpu.py",
                "tests/backends/cpu/test_reuse.py", "tests/interpret/test_models.py"]


def environment() -> dict:
    """``os.environ`` with bounds checking on and the checked builds' own cache folders."""
    base = Path(os.environ.get("RNNC_BOUNDSCHECK_CACHE",
                               Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rnnc-boundscheck"))
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", RNNC_CACHE_DIR=str(base / "rnnc"),
               NUMBA_CACHE_DIR=str(base / "numba"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def main(argv: list[str]) -> int:
    args = argv or DIFFERENTIAL
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", *args]
    return subprocess.call(cmd, cwd=ROOT, env=environment())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
