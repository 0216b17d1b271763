"""The CUDA op -> template table: the vetted CPU templates (:data:`REUSED`), plus CUDA forms of the ones that
would race or call BLAS (here, and the image ops in :mod:`rnnc.backends.cuda.ops_image`).

Every CPU template that writes each output element once runs unchanged on the GPU: the
:class:`~rnnc.backends.cuda.emit.CudaEmitter` makes its outermost loop nest a kernel with one thread per
element. Templates that *accumulate* (``out += ...`` across an outer loop) would race there, so their CUDA
forms put the reduced dims in an inner sequential loop, one thread per output element::

    for each output element (in parallel):  acc = 0;  for each reduced index: acc += x[...];  out[...] = acc

Matrix products on axis-free matrices call the tiled shared-memory kernel :func:`rnnc.backends.cuda.kernels.gemm`
once over all rows (host strategy) or run as per-element dot products reading the matrix from shared memory
(inside a persistent scan kernel).
"""
from __future__ import annotations

from rnnc.backends.cpu import ops_ewise, ops_linalg
from rnnc.backends.cpu.emit import BATCH, Buf, feat_ranges
from rnnc.backends.cpu.ops import HANDLED_BY_RENDERER, TemplateTable
from rnnc.backends.cpu.ops import TEMPLATES as CPU_TEMPLATES
from rnnc.backends.cpu.render import BufSpec, MissingTemplate
from rnnc.backends.cuda import ops_batchnorm, ops_image
from rnnc.ops.registry import ops_with


def _reduce(r, node, out_dims, inner, elem_fn, cond=None, post=None) -> None:
    """``out[o] = post(sum over inner ranges of elem_fn(env, out feats))``, one thread per output element.

    ``inner`` are (var, size) ranges (loop axes / batch / features) summed in sequence; ``cond`` (a string
    over those vars) skips terms; the env maps every lead dim to its variable. On the host strategy, a sum
    over both rows (loop axes / batch) and features (a conv bias gradient: samples × pixels) runs in two
    parallel stages: one thread per (row, output element) sums the features into a partial buffer, then one
    thread per output element sums the rows.
    """
    lead = {r.var(d): d for d in list(r.axes) + [BATCH] if d not in r.fixed}
    rows = [(v, s) for v, s in inner if v in lead]
    rest = [(v, s) for v, s in inner if v not in lead]
    if r.em.in_kernel or not rows or not rest:
        _reduce_once(r, node, r.out(node), out_dims, inner, elem_fn, cond, post)
        return
    row_dims = [lead[v] for v, _ in rows]
    part = Buf(r.name(node, "pr"), tuple(row_dims) + tuple(out_dims), tuple(node.shape))
    r.buffers.append(BufSpec(part.var, part.dims, part.shape))
    _reduce_once(r, node, part, row_dims + list(out_dims), rest, elem_fn, cond)
    _reduce_once(r, node, r.out(node), out_dims, rows,
                 lambda env, f: part.at(r.env(row_dims + list(out_dims)), f), post=post)


def _reduce_once(r, node, out, out_dims, inner, elem_fn, cond=None, post=None) -> None:
    """One stage of :func:`_reduce`: ``out`` over ``out_dims`` × the node's features, ``inner`` summed."""
    env = r.env(out_dims)
    feats = [v for v, _ in feat_ranges(node.shape)]
    with r.em.loops(r.lead_ranges(out_dims) + feat_ranges(node.shape)):
        r.em.line("acc = F(0.0)")
        with r.em.loops(inner):
            if cond:
                with r.em.block(f"if {cond}:"):
                    r.em.line(f"acc += {elem_fn(env, feats)}")
            else:
                r.em.line(f"acc += {elem_fn(env, feats)}")
        r.em.line(f"{out.at(env, feats)} = " + (post("acc") if post else "acc"))


def _lengths(r, node):
    return r.buf(node.inputs[1]).at(r.env([BATCH]), []) if len(node.inputs) > 1 else None


def t_sum_to(r, node) -> None:
    """Unbroadcast: sum ``g`` over the lead dims and feature dims ``node`` lacks."""
    (g,) = node.inputs
    out_dims, g_dims = r.space(node), r.space(g)
    extra = len(g.shape) - len(node.shape)
    inner = [(r.var(d), r.size(d)) for d in g_dims if d not in out_dims]
    inner += [(f"q{k}", str(s)) for k, s in enumerate(g.shape[:extra])]
    bcast = [k for k, s in enumerate(node.shape) if s == 1 and g.shape[extra + k] != 1]
    inner += [(f"u{k}", str(g.shape[extra + k])) for k in bcast]

    def elem(env, feats):
        full = r.env(g_dims)
        gf = [f"q{k}" for k in range(extra)] + [f"u{k}" if k in bcast else feats[k] for k in range(len(feats))]
        return r.buf(g).at(full, gf)
    _reduce(r, node, out_dims, inner, elem)


def t_embedding_grad(r, node) -> None:
    """The scatter-add of :func:`rnnc.backends.cpu.ops_embedding.t_embedding_grad` without races: one thread per
    table element ``(v, j)`` sums ``g[..., j]`` over the samples and steps whose index is ``v``."""
    g, idx = node.inputs
    g_dims = r.space(g)
    full = r.env(g_dims)
    row = feat_ranges(node.shape)[0][0]
    _reduce(r, node, r.space(node), [(r.var(d), r.size(d)) for d in g_dims],
            lambda env, f: r.buf(g).at(full, [f[1]]), cond=f"{r.buf(idx).at(full, [])} == {row}")


def _axis_sum(mean: bool):
    def template(r, node) -> None:
        x, axis = node.inputs[0], node.attr("axis")
        lens = _lengths(r, node)
        dims = r.space(node)
        count = f"F({lens})" if lens is not None else f"F({r.size(axis)})"
        cond = f"{r.var(axis)} < {lens}" if lens is not None else None
        _reduce(r, node, dims, [(r.var(axis), r.size(axis))],
                lambda env, f: r.buf(x).at(r.env(dims + [axis]), f), cond=cond,
                post=(lambda a: f"{a} / {count}") if mean else None)
    return template


def t_edge_sum(r, node) -> None:
    """:math:`\\sum g[t]` over the indices where a read at ``t + offset`` leaves the axis."""
    g, axis, off = node.inputs[0], node.attr("axis"), node.attr("offset")
    n = r.size(axis)
    dims = r.space(node)
    k = f"min({abs(off)}, {n})"
    cond = f"{r.var(axis)} < {k}" if off < 0 else f"{r.var(axis)} >= {n} - {k}"
    _reduce(r, node, dims, [(r.var(axis), n)], lambda env, f: r.buf(g).at(r.env(dims + [axis]), f), cond=cond)


def t_batch_mean(r, node) -> None:
    (x,) = node.inputs
    dims = r.space(node)
    _reduce(r, node, dims, [(r.var(BATCH), r.size(BATCH))],
            lambda env, f: r.buf(x).at(r.env(dims + [BATCH]), f), post=lambda a: f"{a} / F(nb)")


def _outer_sum_loops(r, node) -> None:
    g, b = node.inputs
    full = g if len(r.dims(g)) >= len(r.dims(b)) else b
    out_dims = r.space(node)
    inner = [(r.var(d), r.size(d)) for d in r.space(full) if d not in out_dims]
    env_all = r.env(r.space(full))
    out = r.out(node)
    env = r.env(out_dims)
    with r.em.loops(r.lead_ranges(out_dims) + [("m", str(g.shape[0])), ("q", str(b.shape[0]))]):
        r.em.line("acc = F(0.0)")
        with r.em.loops(inner):
            r.em.line(f"acc += {r.buf(g).at(env_all, ['m'])} * {r.buf(b).at(env_all, ['q'])}")
        r.em.line(f"{out.at(env, ['m', 'q'])} = acc")


def t_outer_sum(r, node) -> None:
    """:math:`G = \\sum g\\, x^T` over the rows ``node`` lacks: one tiled GEMM ``g^T x`` when it can."""
    g, b = node.inputs
    gb, xb = r.buf(g), r.buf(b)
    if (not r.em.in_kernel and not r.dims(node) and r.dims(g) == r.dims(b) and not (set(gb.dims) & set(r.fixed))
            and gb.literal is None and xb.literal is None and len(g.shape) == len(b.shape) == 1
            and set(gb.dims) == set(r.dims(g))):
        out = r.out(node)
        rows = " * ".join(r.size(d) for d in gb.dims) or "1"
        r.em.line(f"lib.gemm({gb.var}.reshape(({rows}, {g.shape[0]})), {xb.var}.reshape(({rows}, "
                  f"{b.shape[0]})), {out.var}, 1, 0)")
        return
    _outer_sum_loops(r, node)


def t_matmul(r, node) -> None:
    """:math:`y = A x`: one tiled GEMM ``X (rows, N) · A^T`` on the host strategy when A is axis-free;
    per-element dot products otherwise (inside a persistent scan reading a transposed copy ``A^T``, in
    shared memory when it fits: see :meth:`~rnnc.backends.cuda.render.CudaRenderer.matrix_t`)."""
    a, b = node.inputs
    out = r.out(node)
    if not r.em.in_kernel and ops_linalg._gemm_ok(r, node, a, b):
        outer_b, vb, rows = ops_linalg._rows_view(r, r.buf(b), r.dims(b))
        outer_o, vo, _ = ops_linalg._rows_view(r, out, r.dims(node))
        if outer_b == outer_o and not outer_o:
            M, N = a.shape
            r.em.line(f"lib.gemm({vb}.reshape(({rows}, {N})), {r.buf(a).var}, {vo}.reshape(({rows}, {M})), 0, 1)")
            return
    at = r.matrix_t(a) if r.em.in_kernel else None
    dims = r.space(node)
    env = r.env(dims)
    feats = [v for v, _ in feat_ranges(node.shape)]
    bf = ["q"] + feats[1:]
    elem = at.at(env, ["q", feats[0]]) if at is not None else r.buf(a).at(env, [feats[0], "q"])
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(node.shape)):
        r.em.line("acc = F(0.0)")
        with r.em.loops([("q", str(a.shape[1]))]):
            r.em.line(f"acc += {elem} * {r.buf(b).at(env, bf)}")
        r.em.line(f"{out.at(env, feats)} = acc")


#: CPU templates that write each output element exactly once from a plain loop nest (no ``+=`` across the
#: parallel loops, no host-side numpy or BLAS calls): they run unchanged as one-thread-per-element kernels.
#: Any other CPU template is NOT inherited, so an op that gains a CPU form without a vetted CUDA one is
#: reported by :func:`missing_templates` (and by the renderer, naming the node) instead of racing silently.
#: (the op table's ``cuda_reuses_cpu`` property, see rnnc.ops.registry.OpDef.) Ops with a scalar form run the
#: same loop with their CUDA scalar form (``OpDef.scalar_cuda``), whenever they were registered.
REUSED = ops_with(cuda_reuses_cpu=True)

_TABLE: dict = {op: fn for op, fn in CPU_TEMPLATES.items() if op in REUSED and ops_ewise.template_for(op) is None}
_TABLE.update({
    "matmul": t_matmul, "outer_sum": t_outer_sum, "sum_to": t_sum_to, "asum": _axis_sum(False),
    "amean": _axis_sum(True), "edge_sum": t_edge_sum, "batch_mean": t_batch_mean, "embedding_grad": t_embedding_grad,
})
_TABLE.update(ops_image.TEMPLATES)
_TABLE.update(ops_batchnorm.TEMPLATES)


class UnsupportedCollective(MissingTemplate):
    """A collective op (:mod:`rnnc.ops.collective`) reached the CUDA renderer, which cannot call MPI between
    its kernels."""


def t_refuse_collective(r, node) -> None:
    """Collective ops reduce across MPI ranks between two stages; the CUDA runtime has no such hook yet."""
    raise UnsupportedCollective(
        f"op {node.op!r} ({node.label()} at {node.where}) reduces across the ranks of a data-parallel run "
        f"(synchronised batch norm); the CUDA backend does not run collectives: compile with target='cpu', or "
        f"train with per-rank batch norm (DataParallel(comm, sync_batchnorm=False))")


_TABLE.update({op: t_refuse_collective for op in ops_with(collective=True)})
TEMPLATES = TemplateTable(_TABLE, lambda op: ops_ewise.template_for(op, cuda=True))


def missing_templates() -> list[str]:
    """Ops of :data:`rnnc.ops.OPS` with no CUDA template."""
    from rnnc.ops import OPS

    return sorted(op for op in OPS if op not in TEMPLATES and op not in HANDLED_BY_RENDERER)
