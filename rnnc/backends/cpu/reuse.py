"""Buffers that share storage: a buffer born after another one died takes its memory.

Every work buffer of a generated module used to have storage of its own for the whole call
(:mod:`rnnc.runtime.arena`), although many full-sequence buffers are needed only between two stages: an LSTM's
input products ``U @ x[t]`` for all steps are read by the forward scan only, the gates' adjoints for all steps
are born in the reverse scan. :func:`share_dead` lets the later buffer be a view of the earlier one's array.

Liveness is read off ``run``'s statements, the only place buffers meet, as the module is assembled
(:func:`rnnc.backends.cpu.module.statement_uses`): they run in order (prologue statements, stage function
calls, parallel kernels, the numpy statements after a stage), and every stage function or kernel receives the
buffers it touches as arguments named like the buffers. A buffer's live range
is from the first statement that names it to the last one (reads and writes alike; whole stage functions, so
all buffers of one call are live together). Two buffers whose ranges do not meet never hold a value at the same
time, and the later one may take the earlier one's storage. Kept out of sharing: buffers the runtime reads after
``run`` returns (outputs, values, gradients, the loss), axis-free buffers (no axis or batch dim to view them
along), a lagged pair's storage and its views (:func:`rnnc.backends.cpu.refs.plan_lags`), and anything that is
already a view.

A shared buffer is not cleared: its array holds the dead buffer's last values when the first statement
naming it runs. That is sound for the buffers of node values: no generated code reads an element of one that
the same call has not written first (accumulators are cleared in code before ``+=``; a lagged pair's first
entries get the initial value before the loop). With every buffer NaN before the call, the CPU backend's
differential tests give the same results, except for image models: an image kernel's scratch buffers (im2col
columns and the like, ``ops_image._scratch``) rely on their never-written padding staying zero, so the renderer
pins every buffer that is no node's value. ``tests/backends/cpu/test_reuse.py`` checks random models and the
LSTM from NaN-filled buffers, shared and unshared, bit for bit.
"""
from __future__ import annotations

from rnnc.backends.cpu.rendered import BufSpec


def live_ranges(uses: list, variables) -> dict:
    """``var -> (first, last)`` statement numbers of ``run`` that name ``var`` (vars never named are left out)."""
    out: dict = {}
    for k, names in enumerate(uses):
        for v in variables:
            if v in names:
                first, _ = out.get(v, (k, k))
                out[v] = (first, k)
    return out


def share_dead(buffers: list, uses: list, pinned) -> list:
    """``buffers`` with each buffer that can take the storage of a dead one of the same dims, shape and kind
    turned into a view ``(base, 0)`` of it (:class:`~rnnc.backends.cpu.rendered.BufSpec`); ``pinned`` vars are
    never shared (what the runtime reads after ``run``, scratch that relies on starting zeroed). Greedy over first
    uses: a buffer joins the first storage of its type whose last user ran before this buffer's first user."""
    bases = {b.view[0] for b in buffers if b.view}
    free = [b for b in buffers if not b.view and not b.extra and b.var not in bases and b.var not in pinned
            and b.dims]
    ranges = live_ranges(uses, {b.var for b in free})
    free = sorted((b for b in free if b.var in ranges), key=lambda b: ranges[b.var])
    slots: dict = {}                        # (dims, shape, kind) -> [[storage var, last use]]
    into: dict = {}                         # var -> the var whose storage it takes
    for b in free:
        first, last = ranges[b.var]
        kind = (tuple(b.dims), tuple(b.shape), b.kind)
        slot = next((s for s in slots.get(kind, []) if s[1] < first), None)
        if slot is None:
            slots.setdefault(kind, []).append([b.var, last])
        else:
            into[b.var] = slot[0]
            slot[1] = last
    return [BufSpec(b.var, b.dims, b.shape, b.kind, b.extra, (into[b.var], 0)) if b.var in into else b
            for b in buffers]
