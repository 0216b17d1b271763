"""A small part of the differential suite, compiled with Numba's bounds checking (``NUMBA_BOUNDSCHECK=1``, in
a new process: see ``tests/boundscheck.py``, which runs the whole differential suite so). Any out-of-bounds
access in a generated kernel then fails the run with ``IndexError`` instead of reading past an array."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import boundscheck
from paths import REPO

PROBE = textwrap.dedent("""
    import sys
    import numba, numpy as np
    import rnnc as rc
    sys.path.insert(0, "tests")
    from zoo import ZOO
    assert numba.config.BOUNDSCHECK == 1, numba.config.BOUNDSCHECK
    case = ZOO["two_tap"]()
    k = rc.compile(case.model, dtype="float64").kernel("step")
    b = k.bind({"x": np.zeros((1, 2, 2))}, case.params(0), sizes={"t": 1})
    extra = {}
    for name, (hvar, svar, depth) in k.layout.hist.items():
        extra[hvar], extra[svar] = np.zeros((depth - 1, 2, 3)), 1     # one step short, past the boundary's check
    try:
        k.call(b, extra)
    except IndexError:
        print("IndexError")
""")


def run(args, timeout=240):
    return subprocess.run(args, cwd=REPO, env=boundscheck.environment(), capture_output=True, text=True,
                          timeout=timeout)


def test_bounds_checking_is_on_and_catches_a_short_history():
    """The checked build is live: a step kernel handed a history one step short (which ``Compiled.step``
    refuses) raises IndexError instead of reading before the array."""
    out = run([sys.executable, "-c", PROBE])
    assert out.returncode == 0 and out.stdout.strip() == "IndexError", out.stdout + out.stderr


def test_differential_subset_under_boundscheck():
    out = run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider",
               "tests/backends/cpu/test_backend_cpu.py", "-k",
               "step_matches_whole_sequence or (zoo_forward_and_grad_float64 and (elman or lstm))"])
    assert out.returncode == 0 and " passed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
