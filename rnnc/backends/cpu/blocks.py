"""Row blocks of a split scan on threads: ``run_blocks(stage, parts, nb, *args)`` in generated code.

A split scan's stage function (``@njit(nogil=True)``) takes its block of batch rows ``b0_, b1_`` last and runs
the whole time loop on those rows. The blocks are independent, so each runs on its own thread, from start to
end of the scan, with no synchronisation per step: block 0 on the calling thread, the others on a small pool
of Python threads (the stage releases the GIL). Plain threads rather than a ``numba.prange`` driver: a
parallel driver per scan cost 3-6 s of Numba compile time each (an LSTM's gradient kernel went 4.7 -> 13.8 s
cold, measured); a thread hand-off costs tens of microseconds per scan, not per step.
"""
from __future__ import annotations

import os
import threading

_POOL = None
_PID = None
_LOCK = threading.Lock()


def _pool(workers: int):
    """The worker threads, made on first use (a kernel that never splits never imports concurrent.futures), and
    made again in a forked child, where the parent's threads do not exist."""
    from concurrent.futures import ThreadPoolExecutor

    global _POOL, _PID
    with _LOCK:
        if _POOL is None or _PID != os.getpid() or _POOL._max_workers < workers:
            if _POOL is not None and _PID == os.getpid():
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rnnc-rows")
            _PID = os.getpid()
        return _POOL


def run_blocks(stage, parts: int, n: int, *args) -> None:
    """``stage(*args, lo, hi)`` for ``parts`` blocks ``[lo, hi)`` of ``range(n)``, concurrently; returns when
    all are done (an exception in any block is raised here)."""
    run_calls([(stage, (*args, p * n // parts, (p + 1) * n // parts)) for p in range(max(1, parts))])


def run_calls(calls) -> None:
    """``fn(*args)`` for each ``(fn, args)`` of ``calls`` concurrently: the first on this thread, the others on
    the pool; returns when all are done (an exception in any is raised here)."""
    if len(calls) == 1:
        fn, args = calls[0]
        fn(*args)
        return
    pool = _pool(len(calls) - 1)
    rest = [pool.submit(fn, *args) for fn, args in calls[1:]]
    try:
        fn, args = calls[0]
        fn(*args)
    finally:
        for f in rest:
            f.result()
