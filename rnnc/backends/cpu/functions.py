"""A rendered module's code cut into ``@njit`` functions, and the calls of them that ``run`` makes.

Numba compiles each function on its own, at a fixed cost (0.25-0.6 s here: typing, lowering, LLVM's pipeline,
the cache files) plus a cost per statement that grows faster than linearly with the function's size. The
code of the stages is therefore cut into functions of bounded size, and small ones are packed together:

* each stage's code is split at ``RUN_MARK`` lines (a call that ``run`` makes itself, such as a parallel
  kernel) and at ``PIECE_MARK`` lines (a map stage's row-local run, called in row blocks of the batch);
* a piece longer than :data:`MAX_FUNCTION_LINES` is split again at ``CUT_MARK`` lines, which the renderer
  writes between the nodes of a map stage (each node's code is whole loop nests, sharing no local variable);
* consecutive pieces that ``run`` calls the same way, in row blocks of the batch or once with the same BLAS
  threads, are packed into one function while it stays within :data:`MAX_FUNCTION_LINES`. A model of 200
  signals has 200 scans: 200 functions took 65 s to compile (issue 18), packed ones a few seconds.

Packing row-block pieces is sound because each is row-local (:meth:`Renderer._row_local`): a block of rows
runs the first piece on its rows, then the second, which reads only those rows of the first's results.
Nothing packs across a ``RUN_MARK`` line or the numpy statements ``run`` executes after a stage.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from rnnc.backends.cpu.row_groups import group_row_products

_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
# fastmath "reassoc" only (no assumptions about NaN or infinity): LLVM may reorder a sum, so the register
# accumulations of reductions (a bias gradient summed over batch x pixels) vectorise: 2.4x faster, measured
JIT = "@numba.njit(cache=True, nogil=True, error_model='numpy', fastmath={'reassoc'})"

#: Marks a top-level line of a stage that ``run`` executes itself (a call of a parallel kernel): the stage's
#: function is split there, ``stage_k`` before it and ``stage_k_1``, ``stage_k_2``... after.
RUN_MARK = "#run# "
#: Ends a stage function's piece there (a map stage's row-local run becomes a function of its own)
PIECE_MARK = "#piece#"
#: A place between two nodes of a map stage where a long piece may be cut into two functions
CUT_MARK = "#cut#"
#: the most lines of code in one generated function (a piece with no ``CUT_MARK``, such as one long scan, may
#: be longer). Measured on a busy machine: 50 chained scans (one signal each) compiled in 31 s as 51 functions,
#: 11.5 s packed into functions of at most 64 or 128 lines, 13.9-16.3 s of 256-512 lines
MAX_FUNCTION_LINES = 128
#: the row block of a split scan: ``for ib in range(b0_, b1_)``, GEMMs on rows ``[b0_:b1_]``
SPLIT_LO, SPLIT_HI = "b0_", "b1_"


@dataclass
class _Function:
    """A generated function being packed: its lines, the words its code uses and how ``run`` calls it."""

    name: str
    form: str            # "blocks": in row blocks; "whole": once on rows (0, nb); "once": once, no row block
    kind: str            # the kind of stage ("map", "scan") whose BLAS threads it runs with
    lines: list = field(default_factory=list)
    words: set = field(default_factory=set)
    size: int = 0

    def takes(self, form: str, kind: str, size: int) -> bool:
        return form == self.form and (form == "blocks" or kind == self.kind) \
            and self.size + size <= MAX_FUNCTION_LINES

    def add(self, lines: list, words: set, size: int) -> None:
        self.lines += lines
        self.words |= words
        self.size += size

    def source(self, args) -> list:
        block = [SPLIT_LO, SPLIT_HI] if self.form != "once" else []
        return ["", "", JIT, f"def {self.name}({', '.join(self.params(args) + block)}):"] + self.lines \
            + ["    return 0"]

    def params(self, args) -> list:
        return [a for a in args if a in self.words]

    def call(self, args) -> str:
        params = self.params(args)
        if self.form == "once":
            return f"    {self.name}({', '.join(params)})"
        if self.form == "whole":
            return f"    {self.name}({', '.join(params + ['0', 'nb'])})"
        return f"    _blocks({', '.join([self.name, 'parts_', 'nb'] + params)})  # {self.name} in row blocks"


def _code(lines) -> list:
    """The code of ``lines``, without comments."""
    return [ln.split("  # ", 1)[0] for ln in lines if not ln.lstrip().startswith("#")]


def _marked(lines) -> list:
    """A stage's lines as pieces: code lists, split at ``PIECE_MARK`` lines, and ``RUN_MARK`` call strings."""
    pieces: list = [[]]
    for ln in lines:
        if ln.lstrip().startswith(RUN_MARK):
            pieces.append(ln.split(RUN_MARK, 1)[1])
            pieces.append([])
        elif ln.lstrip().startswith(PIECE_MARK):
            pieces.append([])
        else:
            pieces[-1].append(ln)
    return pieces


def _cut(piece: list) -> list:
    """``piece`` as chunks of at most :data:`MAX_FUNCTION_LINES` lines of code, cut at ``CUT_MARK`` lines
    (one chunk, without the marks, when it is short enough)."""
    segments: list = [[]]
    for ln in piece:
        if ln.lstrip().startswith(CUT_MARK):
            segments.append([])
        else:
            segments[-1].append(ln)
    chunks: list = [[]]
    size = 0
    for seg in segments:
        n = len(_code(seg))
        if chunks[-1] and size + n > MAX_FUNCTION_LINES:
            chunks.append([])
            size = 0
        chunks[-1] += seg
        size += n
    return chunks


def stage_functions(lines, spans, args, kinds, split=frozenset(), barriers=frozenset()) -> tuple[list, list]:
    """``def stage_k(<the args its lines use>)`` functions for the stages' code, and the lines of ``run`` for
    each stage: ``(k, [calls])`` (the function calls, and the ``RUN_MARK`` lines between them).

    ``spans`` are ``(k, start, stop)`` ranges of ``lines``; ``kinds[k - 1]`` is stage k's kind; a stage in
    ``barriers`` has statements of ``run`` after it (no function packs across them). A stage in ``split`` (a
    row-local scan) takes its row block ``b0_, b1_`` last and is called through ``_blocks(stage_k, parts_, nb,
    ...)`` (:func:`rnnc.backends.cpu.blocks.run_blocks`): ``parts_`` blocks of the batch on as many threads,
    each running the whole time loop on its rows, with no synchronisation per step. Should a split stage's code
    name ``nb`` after all (it reads the whole batch somewhere), it is called once with the block ``(0, nb)``."""
    funcs, calls = [], []               # funcs: lines, and each _Function where its source goes
    current: _Function | None = None
    for k, start, stop in spans:
        pieces, grouped = group_row_products(_marked(lines[start:stop]), k, JIT)
        funcs += grouped
        out, part = [], 0
        for piece in pieces:
            if isinstance(piece, str):
                current = None              # a call of run's own: nothing packs across it
                out.append(f"    {piece}")
                continue
            for chunk in _cut(piece):
                code = _code(chunk)
                if not any(c.strip() for c in code):
                    continue
                words = {w for c in code for w in _WORD.findall(c)}
                form = "once" if SPLIT_LO not in words else (
                    "blocks" if k in split and "nb" not in words else "whole")
                kind = kinds[k - 1]
                if current is not None and current.takes(form, kind, len(code)):
                    current.add(chunk, words, len(code))
                    continue
                current = _Function(f"stage_{k}" + (f"_{part}" if part else ""), form, kind)
                current.add(chunk, words, len(code))
                part += 1
                funcs.append(current)
                out.append(current)
        if k in barriers:
            current = None
        calls.append((k, out))
    funcs = [ln for f in funcs for ln in ([f] if isinstance(f, str) else f.source(args))]
    calls = [(k, [c if isinstance(c, str) else c.call(args) for c in out]) for k, out in calls]
    return funcs, calls
