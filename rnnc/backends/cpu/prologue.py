"""``run()``'s prologue: the axis-free transposes and concatenations of parameters (an LSTM's stacked gate
matrices), as Python statements (numpy, and :mod:`rnnc.backends.cpu.copies` as ``cp`` for the transposed
copies), with two clean-ups once the whole module is rendered:

* a result nothing reads is not computed (the transposed stack ``[U_i; U_f; ...]`` whose product reads the
  stack ``[U_i^T U_f^T ...]`` instead);
* a transpose read only by one concatenation is no copy of its own: ``cp.concat_last((p1.T, p3.T, ...), v)``.

The entries are data (:class:`PrologueEntry`), and what the rest of the module reads is the set of names its
code uses (:attr:`rnnc.backends.cpu.functions.StageModule.used`): nothing here reads generated text.

LSTM inference T50 B32 I64 H128, five alternating pairs: 2.47-2.91 ms before, 1.98-2.35 ms after.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rnnc.backends.cpu.emit import note, one_line
from rnnc.backends.cpu.packed_layout import pack_statement


@dataclass(frozen=True)
class PrologueEntry:
    """``out = transpose(ins[0])``, ``out = concatenate(ins, axis=-1)`` or ``out = pack(ins[0])`` (panels of
    ``shape`` ``(panels, k, NR)``, :mod:`rnnc.backends.cpu.packed_layout`), run once per call of ``run``;
    ``comment`` names the IR node; with ``where`` (its user's ``file:line``) the comment is a line of its own
    before the statement (a :class:`~rnnc.backends.cpu.emit.Note`), else it ends the statement's line."""

    out: str
    op: str               # "transpose" | "concat" | "pack"
    ins: tuple
    comment: str = ""
    where: str = ""
    shape: tuple = ()     # "pack": the packed array's shape


def prologue_lines(entries: list, used: set) -> tuple[list, set]:
    """``entries``: :class:`PrologueEntry` values in order; ``used``: the names every other part of the module
    uses. Returns the statements to run and the vars no longer computed."""
    readers = Counter(v for e in entries for v in e.ins)
    concat_inputs = {v for e in entries if e.op == "concat" for v in e.ins}
    inline = {e.out: e.ins[0] for e in entries
              if e.op == "transpose" and e.out not in used and readers[e.out] == 1 and e.out in concat_inputs}
    live, lines = set(used), []
    for e in reversed(entries):
        if e.out not in live or e.out in inline:
            continue
        tag = f"  # {e.comment}" if e.comment and not e.where else ""
        before = [note(f"    # {one_line(e.comment)}", e.where)] if e.comment and e.where else []
        if e.op == "transpose":
            lines += [f"    cp.transpose_into({e.ins[0]}, {e.out}){tag}"] + before      # reversed below: the note first
            live.add(e.ins[0])
        elif e.op == "pack":
            lines += [f"    {pack_statement(e.out, e.ins[0], e.shape)}{tag}"] + before
            live.add(e.ins[0])
        else:
            parts = ", ".join(f"{inline[v]}.T" if v in inline else v for v in e.ins)
            if any(v in inline for v in e.ins):      # 2-D: transposed parts copied by cp.transpose_into
                lines += [f"    cp.concat_last(({parts},), {e.out}){tag}"] + before
            else:
                lines += [f"    np.concatenate(({parts},), axis=-1, out={e.out}){tag}"] + before
            live.update(inline.get(v, v) for v in e.ins)
    dropped = {e.out for e in entries if e.out not in live or e.out in inline}
    return lines[::-1], dropped
