"""The structured pieces a stage's code is made of, as the :class:`~rnnc.backends.cpu.emit.Emitter` writes them.

A stage's code is a list whose items are lines of Python (``str``) and these values:

* :data:`CUT`: a place between two nodes of a map stage where a long piece may be cut into two functions;
* :data:`PIECE_END`: the end of a piece (a map stage's row-local run becomes a function of its own);
* :class:`RunCall`: a call that ``run`` makes itself between two stage functions (a parallel kernel or a
  row-blocked product), with its arguments and the arrays it reads and writes as data.

:func:`rnnc.backends.cpu.functions.stage_functions` packs the lines into :class:`StageFunction` values and
:mod:`rnnc.backends.cpu.row_groups` groups the :class:`RunCall` products, both without reading text back.
The names a list of lines uses are found by Python's own compiler and parser (:func:`names_used`,
:func:`names_written`), as for CUDA kernels' parameters (:func:`rnnc.backends.cuda.emit.free_names`):
templates never list them.
"""
from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass

#: fastmath "reassoc" and "contract" only (no assumptions about NaN or infinity): LLVM may reorder a sum, so the
#: register accumulations of reductions (a bias gradient summed over batch x pixels) vectorise: 2.4x faster,
#: measured; and fuse a product and a sum into one multiply-add: an LSTM step's gate loop 0.327 -> 0.275 ms per
#: 50 steps of 16 rows (three alternating pairs; the float32 tanh helper in ops_ewise clamps its result so it
#: stays exactly +-1 far out)
JIT = "@numba.njit(cache=True, nogil=True, error_model='numpy', fastmath={'reassoc', 'contract'})"


@dataclass(frozen=True)
class Cut:
    """Between two nodes of a map stage (whole loop nests, no shared local variable): a long piece may be cut."""


@dataclass(frozen=True)
class PieceEnd:
    """Ends the stage function's piece here: what follows goes to another function."""


CUT, PIECE_END = Cut(), PieceEnd()


@dataclass(frozen=True)
class RunCall:
    """``module.fn(*args, threads_)`` called by ``run`` itself between stage functions.

    ``reads`` and ``writes`` are the array variables the call reads and writes (for a row product:
    ``reads = (row operand, other operand)``, ``writes = (output,)``); ``comment`` names the IR node, ``where``
    is its user's ``file:line`` (``run`` writes them as a :class:`~rnnc.backends.cpu.emit.Note` line).
    """

    module: str                       # "lak" (row-blocked products) or "imk" (image kernels)
    fn: str
    args: tuple
    reads: tuple = ()
    writes: tuple = ()
    comment: str = ""
    threads: bool = True              # ``threads_`` is its last argument
    where: str = ""

    def text(self) -> str:
        args = list(self.args) + (["threads_"] if self.threads else [])
        return f"{self.module}.{self.fn}({', '.join(args)})"


@dataclass(frozen=True)
class StageFunction:
    """One ``@njit`` function of the module and how ``run`` calls it.

    ``form``: ``"blocks"`` in row blocks of the batch (``_blocks(name, parts_, nb, ...)``), ``"whole"`` once
    on rows ``(0, nb)``, ``"once"`` once with no row block; ``kind``: the kind of stage ("map", "scan") whose
    BLAS threads it runs with; ``params``: the arguments of ``run`` its body uses, in ``run``'s order.
    """

    name: str
    form: str
    kind: str
    params: tuple
    body: tuple

    def source(self) -> list:
        block = ["b0_", "b1_"] if self.form != "once" else []
        return ["", "", JIT, f"def {self.name}({', '.join(list(self.params) + block)}):"] + list(self.body) \
            + ["    return 0"]

    def call(self) -> str:
        params = list(self.params)
        if self.form == "once":
            return f"    {self.name}({', '.join(params)})"
        if self.form == "whole":
            return f"    {self.name}({', '.join(params + ['0', 'nb'])})"
        return f"    _blocks({', '.join([self.name, 'parts_', 'nb'] + params)})  # {self.name} in row blocks"


def names_used(lines) -> frozenset:
    """Every name ``lines`` (whole statements: a function body, or a part of one) mention, attribute names
    included (a superset: ``v3.shape`` gives ``v3`` and ``shape``). Read off the code object Python's own
    compiler makes of them (its global and local names): as exact as walking the syntax tree, and fast."""
    body = textwrap.indent(textwrap.dedent("\n".join(lines)), "    ")
    module = compile(f"def _f():\n{body}\n    pass\n", "<rnnc stage code>", "exec")
    names: set = set()
    codes = [c for c in module.co_consts if hasattr(c, "co_names")]
    while codes:                     # the function, and any comprehension inside it
        code = codes.pop()
        names |= set(code.co_names) | set(code.co_varnames) | set(code.co_freevars)
        codes += [c for c in code.co_consts if hasattr(c, "co_names")]
    return frozenset(names)


def names_written(lines) -> frozenset:
    """The names ``lines`` may write (a superset: an assignment's targets, subscripts included, and every name
    of a call statement, since ``gk.dot(a, b, out)`` and ``np.copyto(out, a)`` write an argument)."""
    tree = ast.parse(textwrap.dedent("\n".join(lines)))
    written: set = set()
    for st in ast.walk(tree):
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
            written |= {n.id for n in ast.walk(st) if isinstance(n, ast.Name)}
        elif isinstance(st, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = st.targets if isinstance(st, ast.Assign) else [st.target]
            written |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return frozenset(written)
