"""The generated module's hooks into a data-parallel run (:mod:`rnnc.ops.collective`), beside ``_threads``.

* A module whose ``run`` reduces a value across ranks (``ck.cross_rank_mean(v12)``, the collective op's
  :class:`~rnnc.backends.cpu.pieces.RunCall`) imports :mod:`rnnc.ops.collective` as ``ck``.
* A gradient kernel's ``run`` says when parameters' gradients are complete: ``_ready('v30', 'v31')`` right
  after the stage (and its numpy statements) that last writes those buffers. ``_ready`` does nothing unless the
  runtime replaces it (:meth:`rnnc.runtime.kernel.Kernel.call`, inside
  :func:`rnnc.ops.collective.across_ranks`): then the all-reduce of those gradients can start while the rest of
  the backward pass runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rnnc.backends.cpu.ops_collective import IMPORT, MODULE
from rnnc.backends.cpu.pieces import RunCall
from rnnc.ir.names import safe_comment

if TYPE_CHECKING:
    from rnnc.backends.cpu.render import Renderer


def ready_lines(r: Renderer, results: dict) -> dict:
    """``{stage k: [line of run]}``: after stage ``k``, the gradient buffers whose last writer is in stage ``k``
    (``results``: node -> buffer variable). A stage function may hold code of later stages (packing), never of
    earlier ones, so every write of stage ``k`` has happened once ``run`` is past stage ``k``'s calls."""
    if not r.graph.grads:
        return {}
    last: dict = {}                       # buffer variable -> the last stage whose code writes it
    for node, buf in r.bufs.items():
        k = r.stage_of.get(node)
        if k is not None:
            last[buf.var] = max(last.get(buf.var, 0), k)
    end = len(r.schedule)
    by_stage: dict = {}
    for name, node in r.graph.grads.items():
        var = results.get(node)
        if var is not None:
            by_stage.setdefault(last.get(var) or end, {}).setdefault(var, []).append(name)
    lines = {}
    for k, found in by_stage.items():
        names = [safe_comment(n, bare=True) for vs in found.values() for n in vs]
        more = f" and {len(names) - 4} more" if len(names) > 4 else ""
        lines[k] = [f"    _ready({', '.join(repr(v) for v in found)})  # gradients complete: "
                    f"{', '.join(names[:4])}{more}"]
    return lines


def hook_lines(calls: list, ready: bool) -> list:
    """Lines for the module's head: the collective ops' module when ``run`` calls it (``calls``: ``run``'s
    calls), and the ``_ready`` hook of a gradient kernel."""
    lines = []
    if any(isinstance(c, RunCall) and c.module == MODULE for c in calls):
        lines += [IMPORT, ""]
    if ready:
        lines += ["", "def _ready(*buffers):",
                  '    """These gradient buffers are complete from here on; the runtime replaces this hook."""',
                  "    return None", ""]
    return lines
