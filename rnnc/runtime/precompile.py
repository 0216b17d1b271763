"""A new module's Numba functions compiled on several cores before its first call.

Numba compiles a function the first time it is called, one after another: the wide flagship's training kernel
calls 57 of them (44 of its own module, 13 of rnnc's kernels), 68-75 s on one core on a new machine.
:func:`precompile` finds every function the first ``run`` will call, with the argument types it will call it
with, by running ``run`` once with the calls recorded instead of made (``run`` is straight-line code: numpy
statements and calls, no branches); then this process and ``workers - 1`` others (:func:`main` in a new Python,
given the module's path, then one job at a time on stdin) take the jobs from one queue, and each compiled
function lands in the on-disk cache (Numba's ``cache=True``; concurrent writers are safe,
:mod:`rnnc.backends.cache`). The first ``run`` then loads what the other processes compiled.

It runs only for a module rendered in this process (one found in the cache was compiled and cached before),
with at least :data:`MIN_JOBS` functions to compile, and never changes a result: a dry run that fails, a
worker that fails or is killed, leaves the functions to compile on first call as before. ``RNNC_COMPILE_WORKERS``
sets the number of processes (default: the CPUs this process may use that other processes leave idle, at most
:data:`MAX_WORKERS`; 0 or 1 turns it off).
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

#: fewest functions to compile for which other processes pay (each costs about a second to start)
MIN_JOBS = 8
#: fewest functions per process
JOBS_PER_WORKER = 4
#: most processes by default
MAX_WORKERS = 8

_PLAIN = ("numpy", "math", "numba")       # modules the generated code uses for real in a dry run


def workers_wanted(jobs: int) -> int:
    """Processes for ``jobs`` functions: ``RNNC_COMPILE_WORKERS`` if set, else the CPUs this process may use
    that other processes leave idle now (:func:`_busy_elsewhere`; at most :data:`MAX_WORKERS`: other processes
    busy on every core, as parallel test workers are, leave one); never more than one per
    :data:`JOBS_PER_WORKER` jobs, and 1 below :data:`MIN_JOBS`."""
    env = os.environ.get("RNNC_COMPILE_WORKERS", "").strip()
    if env:
        try:
            most = int(env)
        except ValueError:
            raise ValueError(f"RNNC_COMPILE_WORKERS={env!r}: expected a whole number of processes "
                             f"(0 or 1: compile in this process only)") from None
    else:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:          # not on Linux
            cpus = os.cpu_count() or 1
        busy = _busy_elsewhere()
        for _ in range(2):                  # the least of three looks 10 ms apart: not a moment's blip
            time.sleep(0.01)
            busy = min(busy, _busy_elsewhere())
        most = min(MAX_WORKERS, cpus - busy)
    if jobs < MIN_JOBS:
        return 1
    return max(1, min(most, jobs // JOBS_PER_WORKER))


def _busy_elsewhere() -> int:
    """Cores other processes keep busy now: the threads the kernel counts as runnable (``/proc/loadavg``'s
    fourth field) less this process's own (its BLAS threads may still be spinning after a call); without
    ``/proc``, the one-minute load average less one."""
    try:
        with open("/proc/loadavg") as fh:
            runnable = int(fh.read().split()[3].split("/")[0])
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat") as fh:
                    own += fh.read().rpartition(")")[2].split()[0] == "R"
            except (OSError, IndexError):
                pass
        return max(0, runnable - max(own, 1))
    except (OSError, IndexError, ValueError):
        pass
    try:
        return max(0, round(os.getloadavg()[0]) - 1)
    except (AttributeError, OSError):
        return 0


def planned(module, args: list) -> list:
    """``[(dispatcher, argument types)]`` of the Numba functions ``module.run(*args)`` calls, in call order,
    without calling them: each dispatcher in the module, and in the modules it imports (their Python helpers
    report the calls they would make through a ``planned_calls`` function of their module), and each row block
    ``_blocks`` would run, is recorded; other calls do nothing. ``run``'s own code runs with these stand-ins as
    its globals, so the module, which other threads may be calling, is never changed; its numpy statements
    (copies between buffers, which the real call makes again) do run."""
    import numba
    from numba.core.dispatcher import Dispatcher

    found: list = []
    stand_ins: dict = {}            # id(recorder) -> (recorder, kept alive so the id stays its own; dispatcher)

    def record(disp):
        def recorder(*a):
            found.append((disp, tuple(numba.typeof(v) for v in a)))
        stand_ins[id(recorder)] = (recorder, disp)
        return recorder

    def real(value):
        """The dispatcher a recorder stands in for (``run`` passes ``rows_5`` to ``lak.row_products``)."""
        held = stand_ins.get(id(value))
        return held[1] if held is not None and held[0] is value else value

    class DryModule:
        def __init__(self, module):
            self._module = module
            self._plan = getattr(module, "planned_calls", None)

        def __getattr__(self, name):
            value = getattr(self._module, name)
            if isinstance(value, Dispatcher):
                return record(value)
            if callable(value) and not isinstance(value, type):
                def dry(*a, **kw):
                    for disp, call_args in (self._plan(name, *map(real, a)) if self._plan else ()):
                        record(disp)(*call_args)
                return dry
            return value

    def dry_blocks(stage, parts, n, *a):
        record(real(stage))(*a, 0, n)

    dry = dict(vars(module))                  # run's globals for the dry run; the module itself is not touched
    for name, value in vars(module).items():
        if isinstance(value, Dispatcher):
            dry[name] = record(value)
        elif isinstance(value, types.ModuleType) and value.__name__.split(".")[0] not in _PLAIN:
            dry[name] = DryModule(value)
    dry.update(_blocks=dry_blocks, _threads=lambda kind: 1, _ready=lambda *buffers: None)
    run = module.run
    types.FunctionType(run.__code__, dry, run.__name__, run.__defaults__, run.__closure__)(*args)
    return list(dict.fromkeys(found))


def _job(module, disp, sig) -> tuple:
    """``(owner module name or None for ``module`` itself, function name, signature)``."""
    fn = disp.py_func
    if getattr(module, fn.__name__, None) is disp:
        return None, fn.__name__, sig
    return fn.__module__, fn.__name__, sig


def describe(t):
    """A Numba argument type as JSON data (arrays, numbers, booleans and tuples of them), or None."""
    from numba.core import types as nt

    if isinstance(t, nt.Array):
        return ["array", str(t.dtype), t.ndim, t.layout, bool(t.mutable), bool(t.aligned)]
    if isinstance(t, (nt.Integer, nt.Float, nt.Boolean)):
        return ["scalar", str(t)]
    if isinstance(t, nt.BaseTuple):
        items = [describe(i) for i in t.types]
        return None if None in items else ["tuple", items]
    return None


def rebuild(d):
    """The Numba type :func:`describe` gave ``d`` for."""
    from numba.core import types as nt

    if d[0] == "array":
        _, dtype, ndim, layout, mutable, aligned = d
        return nt.Array(getattr(nt, dtype), ndim, layout, readonly=not mutable, aligned=aligned)
    if d[0] == "scalar":
        return getattr(nt, d[1])
    return nt.BaseTuple.from_types([rebuild(i) for i in d[1]])


def precompile(module, path: Path, args: list) -> dict:
    """Compile what ``module.run(*args)`` will call, on :func:`workers_wanted` processes (this one included);
    returns ``{"jobs": n, "workers": w}`` (``w`` = 1: nothing was done here, the first call compiles), and the
    seconds it took, ``"s"``, when it did.

    The jobs wait in one queue, the costliest first (a parallel kernel costs about :data:`PARALLEL_COST` stage
    functions); this process and each worker take the next one as they finish the last, so no share waits on
    a slow one. A job a worker took and did not finish goes back to the queue."""
    t0 = time.perf_counter()
    try:
        calls = planned(module, args)
    except Exception:                   # noqa: BLE001 (no plan: the first call compiles, as without this)
        return {"jobs": 0, "workers": 1}
    jobs = [(disp, sig) for disp, sig in calls if sig not in disp.overloads]
    workers = workers_wanted(len(jobs))
    if workers < 2:
        return {"jobs": len(jobs), "workers": 1}
    queue = sorted(jobs, key=lambda j: PARALLEL_COST if j[0].targetoptions.get("parallel") else 1)
    lock = threading.Lock()

    def take():
        with lock:
            return queue.pop() if queue else None

    procs = []
    for _ in range(workers - 1):
        try:
            procs.append(_start(path))
        except OSError:                 # no new Python here (an embedded interpreter): this process compiles all
            break
    feeders = [threading.Thread(target=_feed, args=(proc, module, take, queue, lock), daemon=True) for proc in procs]
    try:
        for feeder in feeders:
            feeder.start()
        while (job := take()) is not None:
            _compile_here(*job)
        for feeder in feeders:
            feeder.join()
        for job in queue:               # taken by a worker that died: the first call would compile it anyway
            _compile_here(*job)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return {"jobs": len(jobs), "workers": 1 + len(procs), "s": round(time.perf_counter() - t0, 3)}


#: compile time of a parallel kernel (``prange``: a convolution, batch norm...) against a stage function's, about
PARALLEL_COST = 8


def _compile_here(disp, sig) -> None:
    try:
        disp.compile(sig)
    except Exception:                   # noqa: BLE001 (raised again, with its context, by the first call)
        pass


def _feed(proc, module, take, queue, lock) -> None:
    """Hand ``proc`` one job at a time (a JSON line; it answers a line when done) until the queue is empty or it
    dies; a job it took and did not answer goes back to the queue, one whose types have no JSON form is
    compiled in this process."""
    try:
        while (job := take()) is not None:
            owner, name, sig = _job(module, *job)
            args = [describe(a) for a in sig]
            if None in args:            # a type without a description: compiled here (Numba holds a lock)
                _compile_here(*job)
                continue
            try:
                proc.stdin.write(json.dumps([owner, name, args]).encode() + b"\n")
                proc.stdin.flush()
                done = proc.stdout.readline()
            except OSError:
                done = b""
            if not done:
                with lock:
                    queue.append(job)
                return
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


def _start(path: Path):
    """A new Python running :func:`main` on the module at ``path``, with this process's cache folder and this
    rnnc on its path."""
    from rnnc.backends.cache import usable_dir

    env = dict(os.environ, RNNC_CACHE_DIR=str(usable_dir()), RNNC_COMPILE_WORKERS="1")
    here = str(Path(__file__).resolve().parents[2])        # this rnnc, not one in the working folder
    code = "import sys; sys.path[0] = sys.argv[1]; from rnnc.runtime.precompile import main; main(sys.argv[2])"
    return subprocess.Popen([sys.executable, "-c", code, here, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)


def main(path: str) -> None:
    """A worker: load the module at ``path``, then compile each job read from stdin (a JSON line: owner module,
    function name, argument types) and answer a line; one that fails is left to the first call."""
    from rnnc.backends.cache import load

    answers = os.fdopen(os.dup(1), "w")             # stdout answers; anything else printed goes to stderr
    os.dup2(2, 1)
    module = load(Path(path))
    for line in sys.stdin.buffer:       # from the process that started this one
        owner, name, args = json.loads(line)
        if owner is None or owner.startswith("rnnc."):      # the generated module and rnnc's own, nothing else
            try:
                fn = getattr(module if owner is None else importlib.import_module(owner), name)
                fn.compile(tuple(rebuild(a) for a in args))
            except Exception:           # noqa: BLE001
                pass
        answers.write("done\n")
        answers.flush()
