"""Products of a map stage that read the same rows, run together chunk by chunk (``lak.row_products``).

After a reverse scan, an LSTM's map stage reads the stacked gate adjoints ``g`` (all steps × batch rows)
three times: ``dx = g W``, ``dU = g^T x`` and ``dW = g^T h``. Each product used to stream all of ``g`` from
memory on its own. Here consecutive ``lak.matmul_rows`` / ``lak.outer_rows`` calls with the same row operand
become one generated function that walks the rows in chunks small enough for the core's L2 cache and runs
every product on a chunk while it is there:

.. math:: Y_{[c]} = g_{[c]} W, \\qquad G \\mathrel{+}= g_{[c]}^T x_{[c]}.

The chunks of a thread's row block run in order (their size: :func:`rnnc.backends.cpu.kernels_linalg.row_products`);
each thread's outer sums go to their own arrays and are added in block order, as in
:func:`~rnnc.backends.cpu.kernels_linalg.outer_rows`.

A later product is moved up only when that is safe: it reads nothing an earlier product of the group writes
and writes nothing any product of the group reads, and a stage piece or another product it jumps over neither
writes its inputs nor mentions its output (buffers may share storage).
"""
from __future__ import annotations

import re

_CALL = re.compile(r"^lak\.(matmul_rows|outer_rows)\((.*), threads_\)(?:\s+#.*)?$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_ASSIGN = re.compile(r"^([^=()]*?)(?:[-+*/]?=)(?!=)")     # the target side of an assignment statement
_CALL_STATEMENT = re.compile(r"^\s*[A-Za-z_][\w.]*\(")


def _split_args(text: str) -> list:
    """Top-level comma-separated arguments of a call."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()] if cur.strip() else out


def _parse(piece):
    """(kind, [row operand, other operand, output]) of a product call line, or None."""
    if not isinstance(piece, str):
        return None
    m = _CALL.match(piece.strip())
    if not m:
        return None
    args = _split_args(m.group(2))
    return (m.group(1), args) if len(args) == 3 else None


def _base(expr: str) -> str:
    return _WORD.match(expr).group(0)


def _written(code: str, words: set) -> set:
    """Names a line of generated code may write (a superset): an assignment's targets, every name in a call
    statement (``gk.dot(a, b, out)``, ``np.copyto(out, a)`` write an argument)."""
    if _CALL_STATEMENT.match(code):
        return words
    m = _ASSIGN.match(code.strip())
    return set(_WORD.findall(m.group(1))) if m else set()


def _movable(call, group, skipped) -> bool:
    """May ``call`` run before the pieces ``skipped`` (code lists, or other product calls), interleaved with
    the products in ``group``?"""
    _, (row, other, out) = call
    earlier_outs = {_base(args[2]) for _, args in group}
    earlier_ins = {_base(a) for _, args in group for a in args[:2]}
    if _base(other) in earlier_outs or _base(out) in earlier_outs | earlier_ins | {_base(row), _base(other)}:
        return False
    written, mentioned = set(), set()
    for piece in skipped:
        parsed = _parse(piece)
        if parsed is not None:
            written.add(_base(parsed[1][2]))
        for ln in [piece] if isinstance(piece, str) else piece:
            code = ln.split("  # ", 1)[0]
            words = set(_WORD.findall(code))
            mentioned |= words
            written |= _written(code, words)
    return _base(other) not in written and _base(group[0][1][0]) not in written and _base(out) not in mentioned


def group_row_products(pieces: list, stage: int, jit: str) -> tuple[list, list]:
    """``pieces`` (code lists and ``RUN`` call strings of one stage) with each group of two or more products
    sharing a row operand replaced by one ``lak.row_products`` call; returns (pieces, generated functions)."""
    out, funcs, i, groups = [], [], 0, 0
    while i < len(pieces):
        first = _parse(pieces[i])
        if first is None:
            out.append(pieces[i])
            i += 1
            continue
        group, skipped, kept, j = [first], [], [], i + 1
        while j < len(pieces):
            nxt = _parse(pieces[j])
            if isinstance(pieces[j], list) or (nxt is not None and nxt[1][0] != first[1][0]):
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
        funcs += fn
        out.append(call)
        last = kept[-1]
        out += [p for k, p in enumerate(pieces[i + 1:last + 1], i + 1) if k not in kept]
        i = last + 1
    return out, funcs


def _render_group(name: str, group: list, jit: str) -> tuple[list, str]:
    params, args, sums, body = [], [], [], []
    for n, (kind, (_, other, out)) in enumerate(group):
        if kind == "matmul_rows":
            params += [f"b{n}_", f"o{n}_"]
            args += [other, out]
            body.append(f"        gk.dot(a_[c_:d_], b{n}_, o{n}_[c_:d_])")
        else:
            params.append(f"x{n}_")
            args.append(other)
            sums.append((f"s{n}_", out))
            body.append(f"        gk.dot_add(a_[c_:d_].T, x{n}_[c_:d_], s{n}_)")
    sum_params = [s for s, _ in sums]
    head = [f"    {s}[:, :] = 0" for s in sum_params]          # then every chunk adds (one call site each)
    fn = ["", "", jit, f"def {name}({', '.join(['a_'] + params + sum_params + ['lo_', 'hi_', 'step_'])}):",
          f"    # {len(group)} products reading the rows of one operand, chunk by chunk (row_groups.py)",
          *head,
          "    for c_ in range(lo_, hi_, step_):",
          "        d_ = min(c_ + step_, hi_)",
          *body,
          "    return 0"]
    row = group[0][1][0]
    call = (f"lak.row_products({name}, {row}, ({', '.join(args)},), ({', '.join(o for _, o in sums)}"
            f"{',' if sums else ''}), threads_)")
    return fn, call
