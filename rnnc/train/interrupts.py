"""Ctrl-C at a safe point. While :meth:`~rnnc.train.Trainer.fit` runs, SIGINT and SIGTERM only set a flag; the
trainer looks at it between two steps, saves its checkpoint there and raises ``KeyboardInterrupt``. So an
interrupt never lands between an optimizer update and the counters that say how far training got, and a resume
from that checkpoint repeats the uninterrupted run bit for bit.

- A second signal *during a step* stops at once (``KeyboardInterrupt`` from the handler): nothing is saved, the
  checkpoint on disk stays the last consistent one, and the trainer refuses to ``fit`` or save again until it
  is :meth:`~rnnc.train.Trainer.resume`\\ d (its state may be half-updated).
- Signals *during a save* are only recorded: a save is short and atomic, and the trainer stops right after it.
- Handlers are installed only in the main thread (where Python delivers signals), never over a signal that is
  ignored (``SIG_IGN``, e.g. SIGINT of a background job), and the previous handlers are restored when ``fit``
  returns or raises.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

_SIGNALS = ("SIGINT", "SIGTERM")


class DeferredInterrupts:
    """A context manager: inside it, SIGINT/SIGTERM set :attr:`pending` (the signal's name) instead of raising.

    Attributes
    ----------
    pending : str or None
        The first signal received and not yet acted on.
    forced : bool
        True once a second signal stopped a step midway: the caller's state is not consistent.
    """

    def __init__(self):
        self.pending: str | None = None
        self.forced = False
        self._saving = False
        self._previous: dict = {}

    def __enter__(self) -> DeferredInterrupts:
        self.pending = None
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in _SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN or previous is None:
                continue
            self._previous[sig] = previous
            signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _record(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.pending is not None and not self._saving:
            self.forced = True
            raise KeyboardInterrupt(f"second {name}: stopped in the middle of a step; nothing saved")
        if self.pending is None:
            self.pending = name
            try:   # os.write, not print: a handler may run in the middle of another write to stderr
                os.write(2, f"rnnc: {name} received; stopping after this step (send it again to stop at once, "
                            f"without saving)\n".encode())
            except OSError:   # no stderr: the notice is only a courtesy
                pass

    @contextlib.contextmanager
    def saving(self):
        """Within this block a second signal is only recorded, never raised (an atomic save completes)."""
        was, self._saving = self._saving, True
        try:
            yield
        finally:
            self._saving = was

    def take(self) -> str | None:
        """The pending signal's name (or None), clearing it."""
        name, self.pending = self.pending, None
        return name
