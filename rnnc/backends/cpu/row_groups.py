"""Products of a map stage that read the same rows, run together chunk by chunk (``lak.row_products``).

After a reverse scan, an LSTM's map stage reads the stacked gate adjoints ``g`` (all steps × batch rows)
three times: ``dx = g W``, ``dU = g^T x`` and ``dW = g^T h``. Each product used to stream all of ``g`` from
memory on its own. Here consecutive ``lak.matmul_rows`` / ``lak.outer_rows`` calls
(:class:`~rnnc.backends.cpu.pieces.RunCall` values) with the same row operand become one generated function
that walks the rows in chunks small enough for the core's L2 cache and runs every product on a chunk while
it is there:

.. math:: Y_{[c]} = g_{[c]} W, \\qquad G \\mathrel{+}= g_{[c]}^T x_{[c]}.

The chunks of a thread's row block run in order (their size: :func:`rnnc.backends.cpu.kernels_linalg.row_products`);
each thread's outer sums go to their own arrays and are added in block order, as in
:func:`~rnnc.backends.cpu.kernels_linalg.outer_rows`.

A later product is moved up only when that is safe: it reads nothing an earlier product of the group writes
and writes nothing any product of the group reads, and a stage piece or another product it jumps over neither
writes its inputs nor mentions its output (buffers may share storage). What a piece of code writes and
mentions comes from :func:`~rnnc.backends.cpu.pieces.names_written`; what a product reads and writes is data of
its :class:`~rnnc.backends.cpu.pieces.RunCall`.
"""
from __future__ import annotations

from rnnc.backends.cpu.pieces import RunCall, names_used, names_written

#: row products by the number of their arguments: ``(row, other, out)``, or ``(row, out)`` for a sum of rows
PRODUCTS = {"matmul_rows": 3, "outer_rows": 3, "sum_rows": 2}


def _product(piece) -> RunCall | None:
    """``piece`` if it is a row product ``lak.matmul_rows(row, other, out)`` / ``lak.outer_rows(...)`` /
    ``lak.sum_rows(row, out)``."""
    if isinstance(piece, RunCall) and piece.module == "lak" and len(piece.args) == PRODUCTS.get(piece.fn):
        return piece
    return None


def _row(call: RunCall) -> str:
    return call.reads[0]


def _other(call: RunCall) -> str | None:
    return call.reads[1] if len(call.reads) > 1 else None


def _out(call: RunCall) -> str:
    return call.writes[0]


def _movable(call: RunCall, group: list, skipped: list) -> bool:
    """May ``call`` run before the pieces ``skipped`` (lists of lines, or other calls), interleaved with the
    products in ``group``?"""
    earlier_outs = {_out(c) for c in group}
    earlier_ins = {v for c in group for v in c.reads}
    if _other(call) in earlier_outs or _out(call) in earlier_outs | earlier_ins | {_row(call), _other(call)}:
        return False
    written, mentioned = set(), set()
    for piece in skipped:
        lines = ["    " + piece.text()] if isinstance(piece, RunCall) else [ln for ln in piece if isinstance(ln, str)]
        written |= names_written(lines)       # a call statement may write every name it holds
        mentioned |= names_used(lines)
    return _other(call) not in written and _row(group[0]) not in written and _out(call) not in mentioned


def group_row_products(pieces: list, stage: int, jit: str) -> tuple[list, list]:
    """``pieces`` (lists of lines and :class:`RunCall` values of one stage) with each group of two or more
    products sharing a row operand replaced by one ``lak.row_products`` call; returns (pieces, the generated
    functions' lines, one list per function)."""
    out, funcs, i, groups = [], [], 0, 0
    while i < len(pieces):
        first = _product(pieces[i])
        if first is None:
            out.append(pieces[i])
            i += 1
            continue
        group, skipped, kept, j = [first], [], [], i + 1
        while j < len(pieces):
            nxt = _product(pieces[j])
            if isinstance(pieces[j], list) or (nxt is not None and _row(nxt) != _row(first)):
                skipped.append(pieces[j])      # code, or a product of another operand: jumped over if safe
                j += 1
                continue
            if nxt is None or not _movable(nxt, group, skipped):
                break
            group.append(nxt)
            kept.append(j)
            j += 1
        if len(group) == 1:
            out.append(pieces[i])
            i += 1
            continue
        name = f"rows_{stage}" + (f"_{groups}" if groups else "")
        groups += 1
        fn, call = _render_group(name, group, jit)
        funcs.append(fn)
        out.append(call)
        last = kept[-1]
        out += [p for k, p in enumerate(pieces[i + 1:last + 1], i + 1) if k not in kept]
        i = last + 1
    return out, funcs


def _render_group(name: str, group: list, jit: str) -> tuple[list, RunCall]:
    params, args, sums, body = [], [], [], []
    for n, call in enumerate(group):
        other, out = call.args[1:-1], call.args[-1]
        if call.fn == "sum_rows":
            sums.append((f"s{n}_", out))
            body += ["        for r_ in range(c_, d_):",
                     "            for j_ in range(a_.shape[1]):",
                     f"                s{n}_[j_] += a_[r_, j_]"]
        elif call.fn == "matmul_rows":
            params += [f"b{n}_", f"o{n}_"]
            args += [*other, out]
            body.append(f"        gk.dot(a_[c_:d_], b{n}_, o{n}_[c_:d_])")
        else:
            params.append(f"x{n}_")
            args += other
            sums.append((f"s{n}_", out))
            body.append(f"        gk.dot_add(a_[c_:d_].T, x{n}_[c_:d_], s{n}_)")
    sum_params = [s for s, _ in sums]
    head = [f"    {s}[...] = 0" for s in sum_params]          # then every chunk adds (one call site each)
    fn = ["", "", jit, f"def {name}({', '.join(['a_'] + params + sum_params + ['lo_', 'hi_', 'step_'])}):",
          f"    # {len(group)} products reading the rows of one operand, chunk by chunk (row_groups.py)",
          *head,
          "    for c_ in range(lo_, hi_, step_):",
          "        d_ = min(c_ + step_, hi_)",
          *body,
          "    return 0"]
    row = group[0].args[0]
    sums_arg = f"({', '.join(o for _, o in sums)}{',' if sums else ''})"
    call = RunCall("lak", "row_products", (name, row, f"({', '.join(args)},)", sums_arg),
                   reads=tuple(dict.fromkeys(v for c in group for v in c.reads)),
                   writes=tuple(_out(c) for c in group))
    return fn, call
