"""An emitter that turns the CPU backend's loop nests into CUDA kernels and launches.

The CPU op templates write ``with em.loops(ranges): em.line(...)``. :class:`CudaEmitter` keeps that interface
and changes what the *outermost* loop nest means:

* on the host (``run`` is plain Python that launches kernels), an outermost ``loops(ranges)`` opens a new
  ``@cuda.jit`` kernel with one thread per point of ``ranges``; the flat thread index is decomposed into the
  loop variables (last range fastest, so neighbouring threads touch neighbouring memory), and the host gets a
  launch line ``kN[blocks, threads](free names...)``;
* inside a persistent kernel (a whole scan in one launch), an outermost ``loops(ranges)`` becomes a
  block-stride (or grid-stride) loop over the same flat index, followed by a barrier, so that the next
  node reads complete values.

Loops opened inside a kernel stay ordinary sequential ``for`` loops (a row reduction, a dot product). A
kernel's parameters are the names its body reads but never assigns, found with :mod:`ast`, so templates never
list their arguments.
"""
from __future__ import annotations

import ast
import builtins
from contextlib import contextmanager

from numba import config

from rnnc.backends.cpu.emit import Emitter, Note, note
from rnnc.backends.cpu.pieces import RunCall
from rnnc.errors import RnncError

THREADS = 128                                     # threads per block of a map kernel
SIM_THREADS = 4                                   # threads of a map kernel in the simulator (one block)
MODULE_GLOBALS = frozenset({"math", "F", "cuda", "np", "lib"}) | frozenset(dir(builtins))


def free_names(lines: list[str]) -> list[str]:
    """Names that ``lines`` (a function body, indented by 4) read without assigning, in order of first use."""
    tree = ast.parse("def _f():\n" + "\n".join(lines))
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    out: list[str] = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in stored \
                and n.id not in MODULE_GLOBALS and n.id not in out:
            out.append(n.id)
    return sorted(out)


def _indented(text: str) -> str:
    """``text`` one level deeper (a comment line keeps its :class:`~rnnc.backends.cpu.emit.Note` location)."""
    return note("    " + text, text.where) if isinstance(text, Note) else "    " + text


def total_of(ranges) -> str:
    return " * ".join(f"{s}" for _, s in ranges) or "1"


def decompose(ranges, flat: str) -> list[str]:
    """Lines setting each loop variable of ``ranges`` from the flat index ``flat`` (last range fastest)."""
    if not ranges:
        return []
    lines = [f"rem_ = {flat}"]
    for k, (var, size) in enumerate(reversed(ranges)):
        if k == len(ranges) - 1:
            lines.append(f"{var} = rem_")
        else:
            lines += [f"{var} = rem_ % {size}", f"rem_ //= {size}"]
    return lines


class _Kernel:
    """A kernel being written: its name, its parallel ranges and body lines (depth counted inside it)."""

    def __init__(self, name: str, ranges: list, persistent: bool = False):
        self.name, self.ranges, self.persistent = name, list(ranges), persistent
        self.lines: list[str] = []
        self.depth = 1
        self.shared: list[str] = []


class CudaEmitter(Emitter):
    """The CPU :class:`~rnnc.backends.cpu.emit.Emitter` whose lines go to the host (``lines``, the ``run``
    body) or to the kernel being written, and whose outermost loops open kernels; finished kernels' lines
    collect in ``kernels``. Lines, blocks, fresh names and comment notes are the CPU emitter's."""

    _cur: _Kernel | None = None

    def __init__(self, threads: int = THREADS):
        super().__init__()
        self.kernels: list[str] = []
        self.names: list[str] = []
        self.threads = threads
        self._persistent = False                   # writing a persistent kernel
        self._in_stride = False                    # inside one of its block-stride loops
        self.sync = "cuda.syncthreads()"
        self.stride = ("cuda.threadIdx.x", "cuda.blockDim.x")

    # ------------------------------------------------------------------ what differs from the CPU emitter
    @property
    def depth(self) -> int:
        return self._cur.depth if self._cur is not None else self.host_depth

    @depth.setter
    def depth(self, value: int) -> None:
        if self._cur is not None:
            self._cur.depth = value
        else:
            self.host_depth = value

    @property
    def in_kernel(self) -> bool:
        return self._cur is not None

    def _target(self) -> list:
        return self._cur.lines if self._cur is not None else self.lines

    def mark(self, item) -> None:
        """The CPU emitter's structured pieces (:mod:`rnnc.backends.cpu.pieces`) split CPU stage functions; a
        CUDA module is split into kernels by its own rules, so a cut or a piece's end is dropped here. A call
        ``run`` would make (:class:`~rnnc.backends.cpu.pieces.RunCall`) means a CPU-only template reached the
        CUDA renderer: refused, never silently skipped."""
        if isinstance(item, RunCall):
            raise RnncError(f"internal: the CPU call {item.module}.{item.fn} reached the CUDA renderer")

    @contextmanager
    def loops(self, ranges):
        ranges = list(ranges)
        if self._cur is None:
            yield from self._kernel_loops(ranges)
        elif self._persistent and not self._in_stride:
            yield from self._stride_loops(ranges)
        else:
            yield from self._seq_loops(ranges)

    # ------------------------------------------------------------------ the three meanings of loops()
    def _seq_loops(self, ranges):
        with super().loops(ranges):
            yield

    def _kernel_loops(self, ranges):
        """A new map kernel over ``ranges``; on exit, its source is finished and the host launches it."""
        name = f"k{len(self.names)}"
        self._cur = _Kernel(name, ranges)
        try:
            yield
        finally:
            kern, self._cur = self._cur, None
            self._finish_map(kern)

    def _stride_loops(self, ranges):
        """In a persistent kernel: every thread takes flat indices ``tid, tid + stride, ...``, then a barrier."""
        start, step = self.stride
        self.line(f"for tid_ in range({start}, {total_of(ranges)}, {step}):")
        self.depth += 1
        for text in decompose(ranges, "tid_"):
            self.line(text)
        self._in_stride = True
        try:
            yield
        finally:
            self._in_stride = False
            self.depth -= 1
            self.line(self.sync)

    # ------------------------------------------------------------------ kernels
    def _finish_map(self, kern: _Kernel) -> None:
        """A grid-stride loop over the flat index (each thread takes ``tid, tid + gridsize, ...``): on a GPU
        the launch covers every element, so each thread runs once; the simulator launches at most
        :data:`SIM_THREADS` threads (it starts a Python thread per CUDA thread, which dominates its time)."""
        total = total_of(kern.ranges)
        pre = [f"    for tid_ in range(cuda.grid(1), {total}, cuda.gridsize(1)):"]
        pre += ["        " + text for text in decompose(kern.ranges, "tid_")]
        body = pre + [_indented(text) for text in kern.lines]
        args = free_names(body)
        self._add_kernel(kern.name, args, body)
        self.line(f"n_ = {total}")
        if config.ENABLE_CUDASIM:
            launch = f"[1, max(1, min(n_, {SIM_THREADS}))]"
        else:
            launch = f"[max(1, (n_ + {self.threads - 1}) // {self.threads}), max(1, min(n_, {self.threads}))]"
        self.line(f"{kern.name}{launch}({', '.join(args)})")

    def _add_kernel(self, name: str, args: list, body: list[str], shared: list[str] = ()) -> None:
        self.names.append(name)
        head = ["@cuda.jit(cache=True)", f"def {name}({', '.join(args)}):"]
        self.kernels.append(head + list(shared) + list(body))

    @contextmanager
    def persistent(self, threads: int, grid: bool = False, want: str = "1"):
        """Everything emitted inside runs in ONE kernel (a whole scan); outermost loops become block-stride
        loops, or with ``grid`` grid-stride loops with a grid-wide barrier (a cooperative launch of ``want``
        blocks, capped by :func:`rnnc.backends.cuda.kernels.grid_blocks` at what the device keeps resident).
        Yields the kernel to add shared arrays."""
        name = f"k{len(self.names)}"
        kern = _Kernel(name, [], persistent=True)
        self._cur = kern
        self._persistent = True
        if grid:
            self.sync, self.stride = "grid_.sync()", ("cuda.grid(1)", "cuda.gridsize(1)")
            kern.lines.append("    grid_ = cuda.cg.this_grid()")
        try:
            yield kern
        finally:
            self._cur, self._persistent = None, False
            self.sync, self.stride = "cuda.syncthreads()", ("cuda.threadIdx.x", "cuda.blockDim.x")
            args = free_names(kern.shared + kern.lines)
            self._add_kernel(name, args, kern.lines, kern.shared)
            blocks = f"lib.grid_blocks({name}, ({', '.join(args)},), {threads}, {want})" if grid else "1"
            self.line(f"{name}[{blocks}, {threads}]({', '.join(args)})")
