"""Row blocks of a split scan on threads: ``run_blocks(stage, parts, nb, *args)`` in generated code.

A split scan's stage function (``@njit(nogil=True)``) takes its block of batch rows ``b0_, b1_`` last and runs
the whole time loop on those rows. The blocks are independent, so each runs on its own thread, from start to
end of the scan, with no synchronisation per step: block 0 on the calling thread, the others on a few
long-lived worker threads (the stage releases the GIL). Plain threads rather than a ``numba.prange`` driver: a
parallel driver per scan cost 3-6 s of Numba compile time each (an LSTM's gradient kernel went 4.7 -> 13.8 s
cold, measured); a thread hand-off costs tens of microseconds per scan, not per step.

Each worker waits on a lock of its own and signals another when done: a hand-off of two empty blocks took
37 / 51 us (best / median of 200) against 46 / 68 us through a ``ThreadPoolExecutor`` (its queue and
futures), measured.

Beside image kernels (a module whose ``run`` also calls ``numba.prange`` kernels), rnnc's own workers would be
a second pool next to Numba's OpenMP workers, which keep spinning for a while after each parallel region: the
two fought for the cores (the flagship's step 40-42 ms with row blocks against 36-38 without). There
:class:`on_numba_threads` makes :func:`run_calls` deal the calls onto Numba's own thread pool instead (its
threading layer's ``parallel_for``, the entry a compiled ``prange`` uses), so the thread that ran the last image
kernel runs the next row block: one pool, nothing spinning against it.
"""
from __future__ import annotations

import ctypes
import itertools
import os
import threading

_WORKERS: list = []
_PID = None
_LOCK = threading.Lock()       # guards the worker list
_BUSY = threading.Lock()       # held while the workers run one caller's blocks


class _Worker:
    """A daemon thread that runs one ``(fn, args)`` job each time ``go`` is released, then releases ``done``."""

    def __init__(self):
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.job = self.error = None
        threading.Thread(target=self._loop, name="rnnc-rows", daemon=True).start()

    def _loop(self):
        while True:
            self.go.acquire()
            fn, args = self.job
            try:
                fn(*args)
            except BaseException as e:          # noqa: BLE001 (handed to the caller, raised there)
                self.error = e
            self.job = None
            self.done.release()

    def start(self, fn, args) -> None:
        self.job, self.error = (fn, args), None
        self.go.release()

    def wait(self) -> BaseException | None:
        self.done.acquire()
        return self.error


def _workers(n: int) -> list:
    """``n`` workers, made on first use and again in a forked child, where the parent's threads do not exist."""
    global _PID, _WORKERS
    with _LOCK:
        if _PID != os.getpid():
            _WORKERS, _PID = [], os.getpid()
        while len(_WORKERS) < n:
            _WORKERS.append(_Worker())
        return _WORKERS[:n]


def _reset_in_child() -> None:
    """After ``fork``: no worker threads exist in the child, and a lock another thread held stays held."""
    global _LOCK, _BUSY, _WORKERS, _PID
    _LOCK, _BUSY, _WORKERS, _PID = threading.Lock(), threading.Lock(), [], os.getpid()


os.register_at_fork(after_in_child=_reset_in_child)


def run_blocks(stage, parts: int, n: int, *args) -> None:
    """``stage(*args, lo, hi)`` for ``parts`` blocks ``[lo, hi)`` of ``range(n)``, concurrently; returns when
    all are done (an exception in any block is raised here)."""
    run_calls([(stage, (*args, p * n // parts, (p + 1) * n // parts)) for p in range(max(1, parts))])


def run_calls(calls) -> None:
    """``fn(*args)`` for each ``(fn, args)`` of ``calls`` concurrently: the first on this thread, the others on
    the workers (on Numba's threads inside :class:`on_numba_threads`); returns when all are done (an exception
    in any is raised here). While another thread's calls hold the workers (rnnc used from several threads at
    once), these run one after another on this thread. Which thread runs a call never changes what it
    computes: each call's arithmetic is its own."""
    if len(calls) == 1 or not _BUSY.acquire(blocking=False):
        for fn, args in calls:
            fn(*args)
        return
    try:
        if getattr(_MODE, "numba", False) and _numba_pool(calls):
            return
        workers = _workers(len(calls) - 1)
        for w, (fn, args) in zip(workers, calls[1:]):
            w.start(fn, args)
        try:
            fn, args = calls[0]
            fn(*args)
        finally:
            errors = [w.wait() for w in workers]
        for e in errors:
            if e is not None:
                raise e
    finally:
        _BUSY.release()


# ---- the calls on Numba's thread pool -----------------------------------------------------------------------
_MODE = threading.local()          # .numba: run_calls uses Numba's threads on this thread
# void body(char **args, intp *dims, intp *steps, void *data): Numba's gufunc calling convention; parallel_for
# calls it once per index of dims[0] (the number of calls), on the team's threads
_BODY = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_ssize_t),
                         ctypes.POINTER(ctypes.c_ssize_t), ctypes.c_void_p)
_PFOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_ssize_t),
                         ctypes.POINTER(ctypes.c_ssize_t), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                         ctypes.c_int)
_JOBS: list = []                   # (fn, args) of the calls under way (one caller at a time: _BUSY)
_ERRORS: list = []
_NEXT: list = [itertools.count()]  # the next call to take
_ENTRY: list = []                  # [parallel_for, body address, body] once resolved; [None] if unavailable


def _body(args, dims, steps, data) -> None:
    # each of the len(_JOBS) invocations takes calls until none is left (next() on a count is atomic under the
    # GIL): a thread that gets a core late finds its calls done by another instead of holding up the region
    while (r := next(_NEXT[0])) < len(_JOBS):
        fn, a = _JOBS[r]
        try:
            fn(*a)
        except BaseException as e:      # noqa: BLE001 (handed to the caller, raised there)
            _ERRORS[r] = e


def _parallel_for():
    """Numba's threading layer's ``parallel_for`` (launching the layer if need be) and the body's address, or
    None where the layer does not export it."""
    if not _ENTRY:
        try:
            from llvmlite import binding
            from numba.np.ufunc import parallel

            parallel._launch_threads()
            addr = binding.address_of_symbol("numba_parallel_for")
        except Exception:               # noqa: BLE001 (a Numba without the entry: rnnc's own workers)
            addr = None
        body = _BODY(_body)
        _ENTRY[:] = [_PFOR(addr), ctypes.cast(body, ctypes.c_void_p).value, body] if addr else [None]
    return _ENTRY[0] and _ENTRY


def _numba_pool(calls) -> bool:
    """Run ``calls`` on Numba's threads (a team of as many as ``numba.get_num_threads()`` allows, the calling
    thread among them, each taking the next call not yet taken; one after another on this thread when that is
    one); False if Numba's threading layer has no ``parallel_for`` to call."""
    import numba

    entry = _parallel_for()
    if not entry:
        return False
    team = min(len(calls), numba.get_num_threads())
    if team < 2:
        for fn, args in calls:
            fn(*args)
        return True
    pfor, body, _ = entry
    _JOBS[:], _ERRORS[:], _NEXT[0] = calls, [None] * len(calls), itertools.count()
    try:
        pfor(body, (ctypes.c_void_p * 1)(None), (ctypes.c_ssize_t * 1)(len(calls)), (ctypes.c_ssize_t * 1)(1),
             None, 0, 1, team)
        errors = list(_ERRORS)
    finally:
        _JOBS[:], _ERRORS[:] = [], []
    for e in errors:
        if e is not None:
            raise e
    return True


class on_numba_threads:
    """Inside ``with on_numba_threads():``, :func:`run_calls` and :func:`run_blocks` on this thread run their
    calls on Numba's thread pool (``numba.get_num_threads()`` of its threads) instead of rnnc's workers: used by
    :meth:`rnnc.runtime.kernel.Kernel.call` for modules with image kernels, whose ``prange`` regions use that
    pool. ``on=False`` leaves the workers in use."""

    def __init__(self, on: bool = True):
        self.on = on

    def __enter__(self):
        self.saved = getattr(_MODE, "numba", False)
        _MODE.numba = self.on
        return self

    def __exit__(self, *exc):
        _MODE.numba = self.saved
