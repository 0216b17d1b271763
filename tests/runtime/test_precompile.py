"""A new module's functions compiled on several processes before its first call (rnnc/runtime/precompile.py)."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from numba.core.dispatcher import Dispatcher

import rnnc as rc
from rnnc import t
from rnnc.autodiff import grad
from rnnc.runtime import precompile as pc
from rnnc.runtime.kernel import Kernel


def _layers(decay: float, layers: int = 6) -> rc.Model:
    """Stacked RNN layers, alternately forward and backward in time: 13 stage functions in the gradient kernel;
    ``decay`` makes the module new (the cache key holds the constant)."""
    m = rc.Model("layers")
    x, y = m.input("x", 3), m.input("y", 3)
    prev = x
    for k in range(layers):
        W, h = m.param(f"W{k}", (3, 3)), m.signal(f"h{k}", 3)
        h[t] = rc.tanh(W @ prev[t] + (h[t + 1] if k % 2 else h[t - 1]) * decay)
        prev = h
    m.loss(rc.mse(prev[t], y[t]))
    return m


def _fresh():
    """A model no earlier run has compiled, its data and parameters."""
    m = _layers(0.5 + (time.time_ns() % 10**9) * 1e-12)
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((5, 4, 3)), "y": rng.standard_normal((5, 4, 3))}
    return m, data, m.init_params(0, "float64")


def _misses(module) -> dict:
    """Signatures each of the module's functions was compiled for in this process (not loaded from the cache)."""
    return {n: [s for s, k in d.stats.cache_misses.items() if k] for n, d in vars(module).items()
            if isinstance(d, Dispatcher)}


def _check(k, data, params, m):
    bufs = k.call(k.bind(data, params))
    ref = rc.interpret(grad(m), data, params, dtype="float64")
    assert abs(float(k.result(bufs, "loss")) - ref.loss) < 1e-12
    for name, g in ref.grads.items():
        np.testing.assert_allclose(k.result(bufs, "grads", name), g, rtol=1e-10, atol=1e-12)


def test_other_processes_compile_a_share_and_the_first_call_loads_it(monkeypatch):
    monkeypatch.setenv("RNNC_COMPILE_WORKERS", "2")
    m, data, params = _fresh()
    k = Kernel(grad(m).graph, "float64")
    _check(k, data, params, m)
    assert k.stats["precompile"]["workers"] == 2 and k.stats["precompile"]["jobs"] >= 13
    mine = sum(len(s) for n, s in _misses(k.module).items() if n.startswith(("stage_", "rows_")))
    assert 0 < mine < 13, mine                               # the other half came from the other process


def test_a_worker_that_dies_leaves_its_share_to_the_first_call_and_the_plan_is_what_it_compiled(monkeypatch):
    monkeypatch.setenv("RNNC_COMPILE_WORKERS", "2")
    monkeypatch.setattr(pc, "_start", lambda path: subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"],
                                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    m, data, params = _fresh()
    k = Kernel(grad(m).graph, "float64")
    seen = {}
    run = k.module.run
    k.module.run = lambda *a: (seen.setdefault("args", a), run(*a))[1]
    _check(k, data, params, m)
    k.module.run = run
    compiled = {(n, sig) for n, sigs in _misses(k.module).items() for sig in sigs if n.startswith(("stage_", "rows_"))}
    assert len(compiled) == 13                            # this process compiled every function, half of them late
    before = dict(vars(k.module))
    plan = pc.planned(k.module, list(seen["args"]))
    assert vars(k.module) == before                       # the dry run leaves the module as it was
    own = {(d.py_func.__name__, sig) for d, sig in plan if getattr(k.module, d.py_func.__name__, None) is d}
    assert own == compiled                                # (helpers such as tanh_ compile inside the stages)
    assert all(sig in d.overloads for d, sig in plan)     # rnnc's helpers too (lak's row blocks), with their types


def test_the_number_of_workers(monkeypatch):
    monkeypatch.setenv("RNNC_COMPILE_WORKERS", "3")
    assert pc.workers_wanted(pc.MIN_JOBS - 1) == 1
    assert pc.workers_wanted(100) == 3 and pc.workers_wanted(8) == 2       # at least JOBS_PER_WORKER each
    monkeypatch.setenv("RNNC_COMPILE_WORKERS", "0")
    assert pc.workers_wanted(100) == 1
    monkeypatch.setenv("RNNC_COMPILE_WORKERS", "many")
    with pytest.raises(ValueError, match="RNNC_COMPILE_WORKERS='many': expected a whole number"):
        pc.workers_wanted(100)
    monkeypatch.delenv("RNNC_COMPILE_WORKERS")
    monkeypatch.setattr(pc.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for elsewhere, want in ((0, 4), (2, 2), (5, 1)):                       # cores other processes keep busy
        monkeypatch.setattr(pc, "_busy_elsewhere", lambda n=elsewhere: n)
        assert pc.workers_wanted(100) == want
    monkeypatch.undo()
    assert 0 <= pc._busy_elsewhere() < 10_000                              # read from this machine


def test_argument_types_travel_as_json_data_and_come_back_equal():
    import json

    import numba

    ro = np.zeros(3)
    ro.setflags(write=False)
    for value in (np.zeros((2, 3), np.float32), np.zeros((4, 6))[:, ::2], np.zeros((2, 5)).T, ro, 3, 2.5, True,
                  np.float32(1), (np.zeros(2), np.zeros((2, 2))), (1, 2)):
        t = numba.typeof(value)
        assert pc.rebuild(json.loads(json.dumps(pc.describe(t)))) == t
    assert pc.describe(numba.typeof("text")) is None and pc.describe(numba.typeof((1, "a"))) is None


def test_the_trainer_says_when_the_first_call_compiled_on_several_processes():
    from types import SimpleNamespace

    from rnnc.train.trainer import _processes

    def engine(stats):
        return SimpleNamespace(_kernel=SimpleNamespace(stats=stats))
    assert _processes(engine({"precompile": {"jobs": 57, "workers": 2, "s": 30.0}})) == " (57 functions on 2 processes)"
    assert _processes(engine({"precompile": {"jobs": 6, "workers": 1}})) == ""
    assert _processes(engine({"cache_hit": True})) == "" and _processes(SimpleNamespace(_kernel=None)) == ""
    wrapped = SimpleNamespace(engine=SimpleNamespace(impl=engine({"precompile": {"jobs": 9, "workers": 3}})))
    assert _processes(wrapped) == " (9 functions on 3 processes)" and _processes(SimpleNamespace()) == ""


def test_without_a_new_python_this_process_compiles_everything(monkeypatch):
    import types

    monkeypatch.setenv("RNNC_COMPILE_WORKERS", "2")

    def no_python(path):
        raise FileNotFoundError("no executable")
    monkeypatch.setattr(pc, "_start", no_python)
    module = types.ModuleType("eight_functions")
    exec("import numba\n" + "".join(f"f{i} = numba.njit(lambda a: a + {i})\n" for i in range(8))
         + "def run(a):\n" + "".join(f"    f{i}(a)\n" for i in range(8)), vars(module))
    done = pc.precompile(module, None, [np.zeros(3)])
    assert done["jobs"] == 8 and done["workers"] == 1                  # no other process, and no error
    assert all(len(getattr(module, f"f{i}").overloads) == 1 for i in range(8))


INTERRUPTED = """
import os, signal, sys, threading
import numpy as np
sys.path.insert(0, {tests!r})
from test_precompile import _layers, _check
from rnnc.autodiff import grad
from rnnc.runtime import precompile as pc
from rnnc.runtime.kernel import Kernel
m = _layers(0.375)
rng = np.random.default_rng(0)
data = {{"x": rng.standard_normal((5, 4, 3)), "y": rng.standard_normal((5, 4, 3))}}
params = m.init_params(0, "float64")
k = Kernel(grad(m).graph, "float64")
if {interrupt}:
    pids, start = [], pc._start
    pc._start = lambda path: (lambda p: (pids.append(p.pid), p)[1])(start(path))
    threading.Timer({delay}, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        _check(k, data, params, m)
        print("finished")
    except KeyboardInterrupt:
        print("interrupted")
    for pid in pids:
        try:
            os.kill(pid, 0)
            print("left", pid)
        except ProcessLookupError:
            print("gone")
else:
    _check(k, data, params, m)
    print("right", k.stats["cache_hit"])
"""


def test_an_interrupt_while_compiling_leaves_no_worker_and_the_cache_usable(tmp_path, delay=1.2):
    from cache_cases import with_helpers
    from paths import REPO

    env = dict(__import__("os").environ, RNNC_CACHE_DIR=str(with_helpers(tmp_path / "cache")),
               RNNC_COMPILE_WORKERS="2")

    def run(interrupt):
        code = INTERRUPTED.format(tests=str(REPO / "tests" / "runtime"), interrupt=interrupt, delay=delay)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()
    first = run(True)
    assert first[0] in ("interrupted", "finished") and set(first[1:]) <= {"gone"}, first
    assert run(False) == ["right", "True"]       # the module from the cache, its functions compiled or loaded
