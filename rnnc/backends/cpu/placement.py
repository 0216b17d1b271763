"""Where values live when the renderer runs with ``alias_slices`` / ``numpy_prologue``
(:class:`~rnnc.backends.cpu.rendered.RenderOptions`): decisions on the IR and the buffer plan, made before a
node's code is written.

* :func:`place_concats`: a concat's inputs written in place into its buffer (no copy);
* :func:`alias_slice`: a slice read only by elementwise code is an offset view of its input's buffer;
* :func:`to_prologue`: axis-free reshuffles of parameters become :class:`~rnnc.backends.cpu.prologue.PrologueEntry`
  values (numpy statements in ``run``, no loop nest to compile);
* :func:`to_epilogue`: row / feature splits of axis-free results become numpy copies after their stage.

``readers`` are the ops whose CPU templates read every input through :meth:`Buf.at` (so an offset alias is safe).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rnnc.backends.cpu.emit import BATCH, Buf, note, one_line
from rnnc.backends.cpu.prologue import PrologueEntry

if TYPE_CHECKING:
    from rnnc.backends.cpu.render import Renderer


def place_concats(r: Renderer, readers) -> None:
    """A ``concat`` whose inputs are each computed by elementwise code (which writes through
    :meth:`Buf.at`) and read only by such code gets its buffer first; each input is then an offset view
    of it, so the inputs are written in place and the concat costs nothing (an LSTM's gate adjoints,
    stacked for one weight-gradient product). Other readers may be another ``concat`` (a GRU stacks the
    same adjoints twice, in two orders: the first stack is placed, the second copies out of it) and a
    scan's per-step product (a strided view, :func:`strided_product`)."""
    value_of_refs = {r.graph.value_of(ref) for ref in r.graph.refs()}
    taken: set = set()
    for node in r.graph.nodes:
        if node.op != "concat" or node in r.keep_roots or node in r.bufs or not r.dims(node):
            continue
        ins = node.inputs
        step = node in r.step_nodes
        if len(set(ins)) != len(ins) or any(
                i.op not in readers or i.op == "slice" or i in r.bufs or i in taken or i in r.keep_roots
                or i in value_of_refs or r.dims(i) != r.dims(node) or (step and i not in r.step_nodes)
                or len(i.shape) != 1
                or not all(u is node or u.op in readers or u.op == "concat" or strided_product(r, u, i)
                           for u in r.users.get(i, ()))
                for i in ins):
            continue
        fixed, r.fixed = r.fixed, {}
        if step:
            scan = r.schedule[r.stage_of[node] - 1]
            r.fixed = {scan.axis: r.var(scan.axis)}
        whole = r.new_buf(node, step=step)
        r.fixed = fixed
        at = 0
        for i in ins:
            r.bufs[i] = Buf(whole.var, whole.dims, tuple(i.shape), whole.kind, offset=at)
            r.aliases.add(i)
            taken.add(i)
            at += i.shape[0]
        r.placed.add(node)


def strided_product(r: Renderer, user, value) -> bool:
    """Can ``user``, a product, read ``value`` as a strided view of a placed concat (one ``gk.dot`` per step
    on the view's rows: a scan's product on batch rows)? Elsewhere it would fall back to scalar loops."""
    if user.op != "matmul" or user.inputs[1] is not value or user not in r.stage_of:
        return False
    stage = r.schedule[r.stage_of[user] - 1]
    dims = list(r.dims(user))
    return stage.kind == "scan" and stage.axis in dims and dims[dims.index(stage.axis) + 1:] == [BATCH]


def alias_slice(r: Renderer, node, readers) -> bool:
    """A ``slice`` read only by elementwise code (which indexes through :meth:`Buf.at`) is no copy but
    an offset view of its input's buffer (an LSTM's gate blocks of one merged GEMM result)."""
    if node.op != "slice" or node in r.keep_roots or not r.users.get(node) or node in r.aliases:
        return False
    src = r.bufs.get(node.inputs[0])
    if src is None or src.literal is not None or r.dims(node) != r.dims(node.inputs[0]):
        return False
    if node in r.keep and tuple(src.dims) != tuple(r.dims(node)):
        return False        # read after its scan, but its source is a one-step buffer
    if not all(u.op in readers for u in r.users[node]):
        return False
    r.bufs[node] = Buf(src.var, src.dims, tuple(node.shape), src.kind, offset=src.offset + node.attr("start"))
    r.aliases.add(node)
    return True


def to_prologue(r: Renderer, node) -> bool:
    """Axis-free reshuffles of parameters (the transposes and concats that stack an LSTM's gate matrices)
    run once per call as numpy statements in ``run`` itself: no loop nest for Numba to compile."""
    if node.op not in ("transpose", "concat") or r.dims(node) or node in r.keep_roots:
        return False
    if not all(i.op == "param" or i in r.in_prologue for i in node.inputs):
        return False          # run() does the prologue before every stage: params and prologue values only
    ins = [r.bufs.get(i) for i in node.inputs]
    if any(b is None or b.literal is not None or b.offset or b.dims for b in ins):
        return False
    r.in_prologue.add(node)
    r.prologue.append(PrologueEntry(r.out(node).var, node.op, tuple(b.var for b in ins), r.describe(node),
                                    node.where))
    return True


def to_epilogue(r: Renderer, node, stage_no: int) -> bool:
    """Row / feature splits of axis-free results (stacked weight gradients) that no later code of their
    stage reads: numpy copies in ``run`` after the stage's function (no loop nest to compile)."""
    if node.op not in ("take_rows", "slice") or r.dims(node):
        return False
    src = r.bufs.get(node.inputs[0])
    if src is None or src.literal is not None or src.offset or src.dims:
        return False
    if any(r.stage_of.get(u) == stage_no for u in r.users.get(node, ())):
        return False
    a, b = node.attr("start"), node.attr("stop")
    cut = f"[{a}:{b}]" if node.op == "take_rows" else f"[..., {a}:{b}]"
    r.after.setdefault(stage_no, []).extend(
        [note(f"    # {one_line(r.describe(node))}", node.where), f"    np.copyto({r.out(node).var}, {src.var}{cut})"])
    return True
