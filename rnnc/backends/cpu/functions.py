"""A rendered module's code cut into ``@njit`` functions, and the calls of them that ``run`` makes.

Numba compiles each function on its own, at a fixed cost (0.25-0.6 s here: typing, lowering, LLVM's pipeline,
the cache files) plus a cost per statement that grows faster than linearly with the function's size. The
code of the stages is therefore cut into functions of bounded size, and small ones are packed together:

* each stage's code (lines and :mod:`~rnnc.backends.cpu.pieces` values) is split at each
  :class:`~rnnc.backends.cpu.pieces.RunCall` (a call that ``run`` makes itself, such as a parallel kernel)
  and at each :data:`~rnnc.backends.cpu.pieces.PIECE_END` (a map stage's row-local run, called in row blocks);
* a piece longer than :data:`MAX_FUNCTION_LINES` is split again at :data:`~rnnc.backends.cpu.pieces.CUT`
  marks, which the renderer puts between the nodes of a map stage (each node's code is whole loop nests,
  sharing no local variable);
* consecutive pieces that ``run`` calls the same way, in row blocks of the batch or once with the same BLAS
  threads, are packed into one function while it stays within :data:`MAX_FUNCTION_LINES`. A model of 200
  signals has 200 scans: 200 functions took 65 s to compile (issue 18), packed ones a few seconds.

Packing row-block pieces is sound because each is row-local (:meth:`Renderer._row_local`): a block of rows
runs the first piece on its rows, then the second, which reads only those rows of the first's results.
Nothing packs across a :class:`~rnnc.backends.cpu.pieces.RunCall` or the numpy statements ``run`` executes
after a stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rnnc.backends.cpu.pieces import CUT, JIT, PIECE_END, RunCall, StageFunction, names_used
from rnnc.backends.cpu.row_groups import group_row_products

#: the most lines of code in one generated function (a piece with no ``CUT``, such as one long scan, may
#: be longer). Measured on a busy machine: 50 chained scans (one signal each) compiled in 31 s as 51 functions,
#: 11.5 s packed into functions of at most 64 or 128 lines, 13.9-16.3 s of 256-512 lines
MAX_FUNCTION_LINES = 128
#: the row block of a split scan: ``for ib in range(b0_, b1_)``, GEMMs on rows ``[b0_:b1_]``
SPLIT_LO, SPLIT_HI = "b0_", "b1_"

__all__ = ["JIT", "MAX_FUNCTION_LINES", "SPLIT_HI", "SPLIT_LO", "StageModule", "stage_functions"]


@dataclass
class _Packing:
    """A function being packed: its lines, the names its code uses and how ``run`` calls it."""

    name: str
    form: str
    kind: str
    lines: list = field(default_factory=list)
    names: set = field(default_factory=set)
    size: int = 0

    def takes(self, form: str, kind: str, size: int) -> bool:
        return form == self.form and (form == "blocks" or kind == self.kind) \
            and self.size + size <= MAX_FUNCTION_LINES

    def add(self, lines: list, names, size: int) -> None:
        self.lines += lines
        self.names |= names
        self.size += size

    def done(self, args) -> StageFunction:
        return StageFunction(self.name, self.form, self.kind, tuple(a for a in args if a in self.names),
                             tuple(self.lines))


@dataclass(frozen=True)
class StageModule:
    """The stage functions in module order (each a :class:`StageFunction`, or the lines of a row-product
    group's function), what ``run`` does for each stage, ``(k, [StageFunction | RunCall])``, and every name
    their code uses (for the prologue's clean-up, :func:`rnnc.backends.cpu.prologue.prologue_lines`)."""

    functions: tuple
    calls: tuple
    used: frozenset

    def function_lines(self) -> list:
        return [ln for f in self.functions for ln in (f if isinstance(f, list) else f.source())]


def _code_lines(lines) -> int:
    """How many lines of ``lines`` are code (not comments)."""
    return sum(not ln.lstrip().startswith("#") for ln in lines)


def _pieces(items) -> list:
    """A stage's items as pieces: lists of lines and marks, split at :data:`PIECE_END`, and :class:`RunCall`."""
    pieces: list = [[]]
    for item in items:
        if isinstance(item, RunCall):
            pieces += [item, []]
        elif item is PIECE_END:
            pieces.append([])
        else:
            pieces[-1].append(item)
    return pieces


def _cut(piece: list) -> list:
    """``piece`` as chunks of at most :data:`MAX_FUNCTION_LINES` lines of code, cut at :data:`CUT` marks
    (one chunk, without the marks, when it is short enough)."""
    segments: list = [[]]
    for item in piece:
        if item is CUT:
            segments.append([])
        else:
            segments[-1].append(item)
    chunks: list = [[]]
    size = 0
    for seg in segments:
        n = _code_lines(seg)
        if chunks[-1] and size + n > MAX_FUNCTION_LINES:
            chunks.append([])
            size = 0
        chunks[-1] += seg
        size += n
    return chunks


def stage_functions(items, spans, args, kinds, split=frozenset(), barriers=frozenset()) -> StageModule:
    """``def stage_k(<the args its lines use>)`` functions for the stages' code, and what ``run`` does for
    each stage: ``(k, [StageFunction | RunCall])``.

    ``spans`` are ``(k, start, stop)`` ranges of ``items``; ``kinds[k - 1]`` is stage k's kind; a stage in
    ``barriers`` has statements of ``run`` after it (no function packs across them). A stage in ``split`` (a
    row-local scan) takes its row block ``b0_, b1_`` last and is called through ``_blocks(stage_k, parts_, nb,
    ...)`` (:func:`rnnc.backends.cpu.blocks.run_blocks`): ``parts_`` blocks of the batch on as many threads,
    each running the whole time loop on its rows, with no synchronisation per step. Should a split stage's code
    name ``nb`` after all (it reads the whole batch somewhere), it is called once with the block ``(0, nb)``."""
    funcs, calls, used = [], [], set()
    current: _Packing | None = None
    for k, start, stop in spans:
        pieces, grouped = group_row_products(_pieces(items[start:stop]), k, JIT)
        funcs += grouped
        out, part = [], 0
        for piece in pieces:
            if isinstance(piece, RunCall):
                current = None              # a call of run's own: nothing packs across it
                out.append(piece)
                used |= names_used([piece.text()])
                continue
            for chunk in _cut(piece):
                size = _code_lines(chunk)
                if not size:
                    continue
                names = names_used(chunk)
                used |= names
                form = "once" if SPLIT_LO not in names else (
                    "blocks" if k in split and "nb" not in names else "whole")
                kind = kinds[k - 1]
                if current is not None and current.takes(form, kind, size):
                    current.add(chunk, names, size)
                    continue
                current = _Packing(f"stage_{k}" + (f"_{part}" if part else ""), form, kind)
                current.add(chunk, names, size)
                part += 1
                funcs.append(current)
                out.append(current)
        if k in barriers:
            current = None
        calls.append((k, out))
    done = {id(f): f.done(args) for f in funcs if isinstance(f, _Packing)}
    functions = tuple(done.get(id(f), f) for f in funcs)
    calls = tuple((k, [done[id(c)] if isinstance(c, _Packing) else c for c in out]) for k, out in calls)
    return StageModule(functions, calls, frozenset(used))
