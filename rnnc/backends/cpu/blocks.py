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
"""
from __future__ import annotations

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
    the workers; returns when all are done (an exception in any is raised here). While another thread's calls
    hold the workers (rnnc used from several threads at once), these run one after another on this thread."""
    if len(calls) == 1 or not _BUSY.acquire(blocking=False):
        for fn, args in calls:
            fn(*args)
        return
    try:
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
