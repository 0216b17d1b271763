"""What the cache tests share: a tiny numba module source (``SRC``), a tiny model (``tiny``), ``run_tiny``,
which runs a script after ``TINY`` in a new process with its own ``RNNC_CACHE_DIR``, and ``with_helpers``, a new
cache folder holding the suite's compiled helpers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = "import numba\n\n@numba.njit(cache=True)\ndef run(a):\n    return a + 1\n"


def tiny(decay: float):
    """``h[t] = tanh(x[t] + decay h[t-1])``: a model whose cache key changes with the constant."""
    import rnnc as rc
    from rnnc import t

    m = rc.Model("tiny")
    x = m.input("x", 2)
    h = m.signal("h", 2)
    h[t] = rc.tanh(x[t] + h[t - 1] * decay)
    m.output("o", h[t])
    return m


TINY = textwrap.dedent("""
    import sys
    import numpy as np
    import rnnc as rc
    from rnnc import t
    m = rc.Model("tiny")
    x = m.input("x", 3)
    W = m.param("W", (4, 3))
    h = m.signal("h", 4)
    h[t] = rc.tanh(W @ x[t] + h[t - 1] * 0.5)
    m.output("o", h[t])
    f = rc.compile(m, dtype="float64")
    inp = {"x": np.ones((2, 5, 3))}
    p = {"W": np.arange(12.0).reshape(4, 3) / 10}
    out = f.forward(inp, p).outputs["o"]
    err = float(abs(out - rc.interpret(m, inp, p, dtype="float64").outputs["o"]).max())
""")


def run_tiny(script: str, cache) -> list:
    """Run ``TINY`` then ``script`` in a new process with ``RNNC_CACHE_DIR=cache``; its printed words."""
    env = dict(os.environ, RNNC_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", TINY + textwrap.dedent(script)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def with_helpers(folder: Path) -> Path:
    """``folder`` as a new cache folder with a copy of the suite's compiled helpers (Numba's cache files of
    rnnc's own ``@njit(cache=True)`` functions, ``$RNNC_CACHE_DIR/helpers``) and no generated module: a process
    using it compiles the model's module cold but loads the image kernels, gemm... as any later run does,
    instead of spending half a minute compiling them again. Numba writes each entry atomically, so a copy taken
    while the other worker compiles holds whole files (an entry it lacks is compiled, as in an empty folder)."""
    suite = Path(os.environ.get("RNNC_CACHE_DIR", "")) / "helpers"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.environ.get("RNNC_CACHE_DIR") and suite.is_dir():
        shutil.copytree(suite, folder / "helpers", dirs_exist_ok=True)
    return folder
