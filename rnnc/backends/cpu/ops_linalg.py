"""CPU templates of matrix products.

``W @ x`` with an axis-free matrix and ``x`` over every index of the stage is ONE GEMM on the flattened rows
(all steps × batch in a map stage; the batch, per step, in a scan). ``outer_sum`` reduced to an axis-free
value (a weight gradient) is ONE GEMM ``g^T x`` over all rows. Other cases run as plain loop nests.
"""
from __future__ import annotations

from rnnc.backends.cpu.emit import BATCH, feat_ranges
from rnnc.backends.cpu.functions import SPLIT_HI, SPLIT_LO
from rnnc.backends.cpu.packed_layout import packed_shape, packs
from rnnc.backends.cpu.pieces import RunCall
from rnnc.backends.cpu.prologue import PrologueEntry
from rnnc.backends.cpu.rendered import BufSpec


def _rows_view(r, buf, node_dims):
    """A C-contiguous 2-D view expression of ``buf`` (laid out like a node of lead ``node_dims``, or, for a
    one-step buffer, without the scan axis): ``(rows, features)`` after fixing the scan index.

    Dims before the scan axis are looped (a ReNet column sweep: one GEMM per row ``i``), the dims after it are
    the rows. Returns (outer loop dims, view expression, rows expression) or None when the layout differs; the
    rows expression is None when the view is already 2-D (columns of a wider buffer, a split scan's row
    block): a needless ``reshape`` of a view costs Numba about 0.1 s of compile time per product.
    """
    fixed = [d for d in node_dims if d in r.fixed]
    pos = node_dims.index(fixed[0]) if fixed else 0
    outer = list(node_dims[:pos])
    rest = list(node_dims[pos + 1:]) if fixed else list(node_dims)
    has_axis = bool(fixed) and fixed[0] in buf.dims
    if tuple(buf.dims) != tuple(outer + (fixed[:1] if has_axis else []) + rest) or len(buf.shape) != 1:
        return None
    idx = [r.var(d) for d in outer] + ([r.fixed[fixed[0]]] if has_axis else [])
    if narrowed(r, buf):  # columns of a wider buffer (a placed concat): a strided 2-D view, rows one lead dim
        if rest != [BATCH]:
            return None
        rows = f"{SPLIT_LO}:{SPLIT_HI}" if r.batch_span else ":"
        cols = f"{buf.offset}:{buf.offset + buf.shape[0]}"
        return outer, f"{buf.var}[{', '.join(idx + [rows, cols])}]", None
    if r.batch_span:                        # a split scan: the rows of this thread's block only
        if rest != [BATCH]:
            return None
        return outer, f"{buf.var}[{', '.join(idx + [f'{SPLIT_LO}:{SPLIT_HI}'])}]", None
    base = f"{buf.var}[{', '.join(idx)}]" if idx else buf.var
    rows = " * ".join(r.size(d) for d in rest) or "1"
    return outer, base, rows


def narrowed(r, buf) -> bool:
    """Is ``buf`` some of the columns of a wider buffer (an offset alias, the first one at offset 0 included)?"""
    own = next((b for b in r.buffers if b.var == buf.var), None)
    return bool(buf.offset) or (own is not None and tuple(own.shape[-1:]) != tuple(buf.shape[-1:]))


def _gemm_ok(r, node, a, b) -> bool:
    if a.axes or a.batched or len(a.shape) != 2 or len(b.shape) != 1 or a.op == "const":
        return False
    bb = r.buf(b)
    return bb.literal is None and r.dims(b) == r.dims(node) and bb.kind == "f"


def t_matmul(r, node) -> None:
    """:math:`y = A x`: one GEMM ``X (rows, N) @ A^T -> Y (rows, M)`` when A is axis-free, else loops."""
    a, b = node.inputs
    out = r.out(node)
    if _gemm_ok(r, node, a, b):
        vb, vo = _rows_view(r, r.buf(b), r.dims(node)), _rows_view(r, out, r.dims(node))
        if vb is not None and vo is not None:
            (outer, vb, rows), (_, vo, orows) = vb, vo
            M, N = a.shape
            if rows is None or orows is None:      # a 2-D view (a row block, a wider buffer's columns): per step
                if parallel_here(r, outer) or not r.fixed:
                    _matmul_loops(r, node, out)
                    return
                fn, right = _step_operand(r, a)
                with r.em.loops(r.lead_ranges(outer)):
                    r.em.line(f"{fn}({_2d(vb, rows, N)}, {right}, {_2d(vo, orows, M)})")
                return
            if r.fixed:                            # a scan's step: the batch's rows at one index
                fn, right = _step_operand(r, a)
                with r.em.loops(r.lead_ranges(outer)):
                    r.em.line(f"{fn}({vb}.reshape(({rows}, {N})), {right}, {vo}.reshape(({rows}, {M})))")
                return
            right, base = _right_operand(r, a)
            if parallel_here(r, outer):
                r.em.mark(RunCall("lak", "matmul_rows", (f"{vb}.reshape(({rows}, {N}))", right,
                                                         f"{vo}.reshape(({rows}, {M}))"),
                                  reads=(r.buf(b).var, base), writes=(out.var,), comment=r.em.tag, where=r.em.where))
                return
            with r.em.loops(r.lead_ranges(outer)):
                r.em.line(f"gk.dot({vb}.reshape(({rows}, {N})), {right}, {vo}.reshape(({rows}, {M})))")
            return
    _matmul_loops(r, node, out)


def _2d(view, rows, cols) -> str:
    """``view`` as a (rows, cols) matrix: already one when ``rows`` is None (a strided view), else reshaped."""
    return view if rows is None else f"{view}.reshape(({rows}, {cols}))"


def parallel_here(r, outer=()) -> bool:
    """Does a product at this point run as a parallel kernel (a map stage's top level, no loop around it)?"""
    return r.options.parallel_gemms and not r.fixed and not outer and r.em.depth == 1


def _right_operand(r, a) -> tuple[str, str]:
    """``(expression, array variable)`` of ``A^T`` for the GEMM: ``S`` when ``A = transpose(S)``, or an already
    computed ``transpose(A)`` (whole C-contiguous arrays: small products with a transposed operand run up to
    2x slower in OpenBLAS), or, for a product inside a scan, a transposed copy ``u<k>`` that ``run()`` makes
    once per call of a parameter (or a prologue value): OpenBLAS took 9.9 against 5.0 us for a
    (16 x 128) @ (128 x 128)^T step product; else the view ``A.T``. When the code reads another array than
    ``A``'s own, the comment naming the product says which (``w10 = p8_W @ r9_h, reading u8_W = p8_W^T``)."""
    right, base = _transposed_operand(r, a)
    own = r.buf(a).var
    if base != own:
        where = r.em.where                   # the tag's setter clears it
        r.em.tag = f"{r.em.tag}, reading {base} = {own}^T"
        r.em.where = where
    return right, base


def _step_operand(r, a) -> tuple[str, str]:
    """``(function, right operand)`` of a product inside a scan: ``pk.dot`` on ``A^T`` packed in panels once
    per call (``k`` + the array's name, a prologue entry; :mod:`rnnc.backends.cpu.kernels_packed`) when
    ``A^T`` is a whole array ``run()`` has before the stages (a parameter, a prologue value or its transposed
    copy) and its columns fill whole panels; else ``gk.dot`` on :func:`_right_operand`'s array."""
    right, base = _right_operand(r, a)
    ready = {e.out for e in r.prologue} | {r.bufs[p].var for p in r.graph.params.values() if p in r.bufs}
    if not (r.options.packed_steps and r.fixed and right == base and base in ready
            and packs(a.shape[0], r.dtype)):
        return "gk.dot", right
    var = f"k{base}"
    if not any(b.var == var for b in r.buffers):
        shape = packed_shape(a.shape[1], a.shape[0], r.dtype)
        r.buffers.append(BufSpec(var, (), shape))
        r.prologue.append(PrologueEntry(var, "pack", (base,), f"{var} = {base} in panels of {shape[2]} columns",
                                        shape=shape))
    where = r.em.where                   # the tag's setter clears it
    r.em.tag = f"{r.em.tag}, packed as {var}"
    r.em.where = where
    return "pk.dot", var


def _transposed_operand(r, a) -> tuple[str, str]:
    for other in ([a.inputs[0]] if a.op == "transpose" else []) + [
            u for u in r.users.get(a, ()) if u.op == "transpose"]:
        src = r.bufs.get(other)
        if src is not None and _whole(src):
            return src.var, src.var
    own = r.buf(a)
    if r.fixed and r.options.numpy_prologue and (a.op == "param" or a in r.in_prologue) and _whole(own):
        var = r.name(a, "u")
        if not any(b.var == var for b in r.buffers):
            r.buffers.append(BufSpec(var, (), (a.shape[1], a.shape[0])))
            tag = f"{var} = transpose({own.var}), contiguous for a scan"
            r.prologue.append(PrologueEntry(var, "transpose", (own.var,), tag))
        return var, var
    return f"{own.var}.T", own.var


def _whole(buf) -> bool:
    """An axis-free, C-contiguous 2-D array of its own (not a constant, not a view into a wider buffer)."""
    return buf.literal is None and not buf.dims and not buf.offset and len(buf.shape) == 2


def _matmul_loops(r, node, out) -> None:
    a, b = node.inputs
    dims = r.space(node)
    env = r.env(dims)
    feats = [v for v, _ in feat_ranges(node.shape)]
    n = a.shape[1]
    bf = ["q"] + feats[1:]
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(node.shape)):
        r.em.line("acc = F(0.0)")
        with r.em.loops([("q", str(n))]):
            r.em.line(f"acc += {r.buf(a).at(env, [feats[0], 'q'])} * {r.buf(b).at(env, bf)}")
        r.em.line(f"{out.at(env, feats)} = acc")


def t_transpose(r, node) -> None:
    (a,) = node.inputs
    out = r.out(node)
    r.fill_loops(node, out, lambda env, f: r.buf(a).at(env, f[::-1]))


def t_outer_sum(r, node) -> None:
    """:math:`G = \\sum g\\, x^T` over the rows ``node`` lacks: one GEMM ``g^T (M, rows) @ x (rows, N)``."""
    g, b = node.inputs
    out = r.out(node)
    gb, xb = r.buf(g), r.buf(b)
    if (not r.dims(node) and r.dims(g) == r.dims(b) and not (set(gb.dims) & set(r.fixed))
            and gb.literal is None and xb.literal is None and len(g.shape) == len(b.shape) == 1
            and set(gb.dims) == set(r.dims(g))):
        rows = " * ".join(r.size(d) for d in gb.dims) or "1"
        gv, xv = f"{gb.var}.reshape(({rows}, {g.shape[0]}))", f"{xb.var}.reshape(({rows}, {b.shape[0]}))"
        if parallel_here(r):
            r.em.mark(RunCall("lak", "outer_rows", (gv, xv, out.var), reads=(gb.var, xb.var), writes=(out.var,),
                              comment=r.em.tag, where=r.em.where))
        else:
            r.em.line(f"gk.dot({gv}.T, {xv}, {out.var})")
        return
    full = g if len(r.dims(g)) >= len(r.dims(b)) else b
    dims = r.space(full)
    env = r.env(dims)
    r.fill_loops(node, out, lambda e, f: "F(0.0)")
    with r.em.loops(r.lead_ranges(dims) + [("m", str(g.shape[0])), ("q", str(b.shape[0]))]):
        r.em.line(f"{out.at(env, ['m', 'q'])} += {gb.at(env, ['m'])} * {xb.at(env, ['q'])}")


TEMPLATES = {"matmul": t_matmul, "transpose": t_transpose, "outer_sum": t_outer_sum}
