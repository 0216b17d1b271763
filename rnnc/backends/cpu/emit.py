"""The building blocks of generated code: array variables (:class:`Buf`), index environments and an
:class:`Emitter` that writes indented lines, each tagged with the IR node it comes from.

Every value lives in an array laid out ``(*axis sizes, [B], *feature shape)`` (a *full* buffer) or, inside a
scan, without the scan axis (a *step* buffer). Generated code indexes arrays element by element with named
loop variables: axis number ``k`` is ``i{k}``, the batch ``ib``, features ``f0, f1...``; sizes are ``n{k}``
and ``nb``. Broadcasting is then only a matter of which variables an index uses.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from rnnc.errors import RnncError
from rnnc.ir.names import LINE_BREAKS, safe_comment

BATCH = "B"


@dataclass(frozen=True)
class Buf:
    """An array in generated code: ``var`` indexed by lead ``dims`` (axes / BATCH) then feature ``shape``.

    ``literal`` is set for constants (no array: every element is that expression).
    """

    var: str
    dims: tuple
    shape: tuple
    kind: str = "f"          # "f" float or "i" int
    literal: str | None = None
    offset: int = 0          # an alias of features [offset, offset + shape[-1]) of a wider buffer ``var``

    def at(self, env: dict, feats) -> str:
        """The element at lead indices ``env`` (dim -> expr) and feature indices ``feats``."""
        if self.literal is not None:
            return self.literal
        feats = [str(f) for f in feats]
        if self.offset:
            feats[-1] = f"{feats[-1]} + {self.offset}"
        idx = [env[d] for d in self.dims] + feats
        return f"{self.var}[{', '.join(idx) if idx else '0'}]"


def align_feats(feats, out_shape, in_shape) -> list:
    """Feature indices of an input of ``in_shape`` read at output features ``feats`` (numpy broadcasting)."""
    r, R = len(in_shape), len(out_shape)
    if r > R:
        raise ValueError(f"cannot broadcast feature shape {in_shape} to {out_shape}")
    out = []
    for m, s in enumerate(in_shape):
        big = out_shape[R - r + m]
        out.append("0" if s == 1 and big != 1 else feats[R - r + m])
    return out


def one_line(tag: str) -> str:
    """``tag`` if it can end a line of generated code as a comment: no line break of any kind in it (user names
    in a tag come through :func:`rnnc.ir.names.safe_comment`, so this holds unless a template has a bug)."""
    if any(c in LINE_BREAKS for c in tag):
        raise RnncError(f"internal: a comment of generated code must be one line, got {safe_comment(tag)}")
    return tag


def one_line_breaks(src: str) -> str:
    """``src``, a generated module, if ``\\n`` is its only kind of line break (a ``\\r``, ``\\x0b`` or ``\\u2028`` in a
    comment would start a new line for Python's tokenizer or ``str.splitlines``)."""
    if len(src.splitlines()) != len(src.split("\n")) - src.endswith("\n"):
        raise RnncError("internal: generated code holds a line break other than \\n")
    return src


class Note(str):
    """A comment line of generated code that names the value the next lines compute (``# v12_h = tanh(...)``);
    ``where`` is the user's ``file:line`` of that value, kept beside the text, not in it: the module is cached
    by structure, and its locations are added when it is shown (:func:`with_locations`)."""

    where: str = ""


def note(text: str, where: str = "") -> Note:
    out = Note(text)
    out.where = where
    return out


def located(where: str) -> str:
    """`` basename:line  source text`` for the user's ``file:line`` ``where`` (the text from :mod:`linecache`),
    through :func:`rnnc.ir.names.safe_comment`; "" when ``where`` is no file's line."""
    import linecache
    import os

    path, _, line = where.rpartition(":")
    if not path or not line.isdigit() or path.startswith("<"):
        return ""
    linecache.checkcache(path)
    text = linecache.getline(path, int(line)).strip()
    shown = f"{safe_comment(os.path.basename(path), text=True, limit=60)}:{line}"
    return f"   {shown}  {safe_comment(text, text=True, limit=100)}" if text else f"   {shown}"


def join_lines(lines) -> tuple[str, list]:
    """The text of ``lines`` and its sites: ``(line number, file:line)`` of each :class:`Note` with a location."""
    sites, no = [], 0
    for ln in lines:
        if isinstance(ln, Note) and ln.where:
            sites.append((no, ln.where))
        no += ln.count("\n") + 1
    return "\n".join(lines), sites


def with_locations(source: str, sites) -> str:
    """``source`` with the user's location and line appended to the comment lines ``sites`` name:
    ``[(line number, file:line)]`` (0-based); each addition is one line (:func:`located`)."""
    if not sites:
        return source
    lines = source.split("\n")
    for no, where in sites:
        if 0 <= no < len(lines) and lines[no].lstrip().startswith("#"):
            lines[no] += one_line(located(where))
    return "\n".join(lines)


class Tagged:
    """The comment tag both emitters (CPU and CUDA) write: always one line (:func:`one_line`); ``where`` is the
    user's ``file:line`` of the value it names (set after the tag, which clears it)."""

    _tag = ""
    where = ""

    @property
    def tag(self) -> str:
        """The comment naming the value the next lines compute; one line, see :func:`one_line`."""
        return self._tag

    @tag.setter
    def tag(self, text: str) -> None:
        self._tag = one_line(text)
        self.where = ""


class Emitter(Tagged):
    """Writes lines of Python with indentation. The first line written under a new ``tag`` is preceded by a
    comment line holding it (a :class:`Note`). ``lines`` holds the lines and, between them, structured pieces
    (:meth:`mark`)."""

    def __init__(self):
        self.lines: list = []
        self.depth = 0
        self.tag = ""
        self._fresh = 0
        self._said: tuple = (None, "")     # (lines, tag) of the last comment line written

    def mark(self, item) -> None:
        """Put a structured piece (:mod:`rnnc.backends.cpu.pieces`: a cut, a piece's end, a call ``run`` makes)
        among the lines."""
        self.lines.append(item)

    def _target(self) -> list:
        """The list the next line goes to."""
        return self.lines

    def line(self, text: str) -> None:
        """Write ``text`` at the current depth, after the tag's comment line if the tag is new here."""
        target, indent = self._target(), "    " * self.depth
        if self.tag and not text.lstrip().startswith("#") and (self._said[0] is not target
                                                                or self._said[1] != self.tag):
            target.append(note(f"{indent}# {self.tag}", self.where))
            self._said = (target, self.tag)
        target.append(indent + text)

    def fresh(self, prefix: str = "s") -> str:
        self._fresh += 1
        return f"{prefix}{self._fresh}"

    @contextmanager
    def block(self, header: str):
        self.line(header)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    @contextmanager
    def loops(self, ranges):
        """Nested ``for var in range(size)`` loops for ``ranges`` = [(var, size expr), ...]."""
        opened = 0
        for var, size in ranges:
            self.line(f"for {var} in range({size}):")
            self.depth += 1
            opened += 1
        try:
            yield
        finally:
            self.depth -= opened


def feat_vars(shape, prefix: str = "f") -> list[str]:
    return [f"{prefix}{k}" for k in range(len(shape))]


def feat_ranges(shape, prefix: str = "f") -> list[tuple]:
    return [(f"{prefix}{k}", str(s)) for k, s in enumerate(shape)]
