"""Cold compile time and peak memory as a model grows (issue 18, part 6).

Run: ``python benchmarks/compile_scaling.py [--cases chain250,chain500,...] [--timeout S]``. Each case runs in a
new process with an empty rnnc cache and an empty Numba cache (``RNNC_CACHE_DIR``, ``NUMBA_CACHE_DIR`` pointed
at a temporary folder), so nothing is loaded from an earlier run. It prints, per case, the seconds from
``rc.compile`` to the end of the first call (passes, rendering, Numba's compile of every stage function, the
call itself), wall-clock and CPU time of the process (the CPU figure is steadier on a shared machine), and
the process's peak resident memory (``ru_maxrss``). rnnc's own jitted helpers (``gemm``, the image and linear
algebra kernels: a constant cost, independent of the model) are compiled before the clock starts. The cases:

* ``chainN``: an output ``x[t] * w + x[t] + x[t] + ...`` with N adds (one elementwise chain), forward;
* ``tanhN``: N nested ``tanh`` of ``x[t] * w``, forward;
* ``signalsN``: N signals ``s_k[t] = tanh(w_k * s_{k-1}[t] + s_k[t-1])``, each reading the one before
  (N scans), forward (``forward``) and gradient of the loss for every ``w_k`` (``loss_and_grad``);
* ``scanchainN``: a signal ``h[t] = h[t-1] * w + x[t] + x[t] + ...`` with N adds inside the recurrence.

The builders are shared with ``tests/backends/cpu/test_compile_scaling.py``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import rnnc as rc  # noqa: E402
from rnnc import t  # noqa: E402

FEATURES = 4


def chained_adds(n: int) -> rc.Model:
    """``out[t] = x[t] * w + x[t] + ... + x[t]`` with ``n`` adds."""
    m = rc.Model("chained_adds")
    x, w = m.input("x", FEATURES), m.param("w", FEATURES)
    y = x[t] * w
    for _ in range(n):
        y = y + x[t]
    m.output("out", y)
    m.loss(rc.mse(y, x[t]))
    return m


def nested_tanh(n: int) -> rc.Model:
    """``out[t] = tanh(tanh(... tanh(x[t] * w)))``, ``n`` deep."""
    m = rc.Model("nested_tanh")
    x, w = m.input("x", FEATURES), m.param("w", FEATURES)
    y = x[t] * w
    for _ in range(n):
        y = rc.tanh(y)
    m.output("out", y)
    m.loss(rc.mse(y, x[t]))
    return m


def many_signals(n: int) -> rc.Model:
    """``n`` signals, ``s_k[t] = tanh(w_k * s_{k-1}[t] + s_k[t-1])`` with ``s_{-1} = x``: ``n`` scans."""
    m = rc.Model("many_signals")
    x = m.input("x", FEATURES)
    prev = x[t]
    for k in range(n):
        w, s = m.param(f"w{k}", FEATURES), m.signal(f"s{k}", FEATURES)
        s[t] = rc.tanh(w * prev + s[t - 1])
        prev = s[t]
    m.output("out", prev)
    m.loss(rc.mse(prev, x[t]))
    return m


def scan_chain(n: int) -> rc.Model:
    """``h[t] = h[t-1] * w + x[t] + ... + x[t]`` with ``n`` adds inside the recurrence."""
    m = rc.Model("scan_chain")
    x, w, h = m.input("x", FEATURES), m.param("w", FEATURES), m.signal("h", FEATURES)
    y = h[t - 1] * w
    for _ in range(n):
        y = y + x[t]
    h[t] = y
    m.output("out", h[t])
    m.loss(rc.mse(h[t], x[t]))
    return m


BUILDERS = {"chain": chained_adds, "tanh": nested_tanh, "signals": many_signals, "scanchain": scan_chain}
DEFAULT = ["chain250", "chain500", "chain1000", "chain2000", "tanh2000", "signals200", "signals200:grad",
           "scanchain1000"]

CHILD = """
import resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from benchmarks.compile_scaling import BUILDERS
import rnnc as rc
from rnnc.backends.cpu import gemm, kernels_image, kernels_linalg, render  # noqa: F401 (before the clock)
kind, n, mode = {kind!r}, {n}, {mode!r}
m = BUILDERS[kind](n)
rng = np.random.default_rng(0)
x = {{"x": rng.normal(scale=0.1, size=(8, 4, 4)).astype(np.float32)}}
params = {{k: rng.normal(scale=0.5, size=v.shape).astype(np.float32) for k, v in m.graph.params.items()}}
t0, c0 = time.perf_counter(), time.process_time()
f = rc.compile(m)
f.loss_and_grad(x, params) if mode == "grad" else f.forward(x, params)
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
kernel = f.kernel("grad" if mode == "grad" else "loss")
print(seconds, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, kernel.source.count("def stage_"))
"""


def run_case(case: str, timeout: float) -> str:
    name, _, mode = case.partition(":")
    kind = name.rstrip("0123456789")
    n = int(name[len(kind):])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, RNNC_CACHE_DIR=os.path.join(d, "rnnc"), NUMBA_CACHE_DIR=os.path.join(d, "numba"))
        code = CHILD.format(root=root, kind=kind, n=n, mode=mode or "forward")
        try:
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"{case:<16} more than {timeout:.0f} s (stopped)"
    if out.returncode != 0:
        return f"{case:<16} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
    seconds, cpu, rss, funcs = out.stdout.split()[-4:]
    return (f"{case:<16} {float(seconds):7.1f} s  {float(cpu):7.1f} s CPU  {float(rss):6.0f} MB peak  "
            f"{funcs:>4} stage functions")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(DEFAULT), help="comma-separated, e.g. chain500,signals200:grad")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    args = ap.parse_args(argv)
    print(f"cold rc.compile + first call, float32, new process and empty caches per case; "
          f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    for case in args.cases.split(","):
        print(run_case(case, args.timeout), flush=True)


if __name__ == "__main__":
    main()
