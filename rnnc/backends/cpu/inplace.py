"""Storage shared *within* a scan: a value the scan keeps for later stages takes the storage of a value that is
dead once the scan has read its step.

A full buffer (one entry per step of the scan's axis) that a scan reads only at its own step ``t`` and nothing
after the scan reads is dead, step by step, as the scan goes: its row ``t`` is free once step ``t`` has read it.
Two cases use that, both planned before a scan's buffers are allocated (:func:`plan_in_place`):

* **in place** (:func:`_over_inputs`): an elementwise value ``y[t] = f(x[t, o:o+w])`` whose only read of a
  dead ``x`` is its own block of features is written over that block: ``y`` *is* ``x[:, :, o:o+w]`` (an offset
  :class:`~rnnc.backends.cpu.emit.Buf`). Each element of the block is read by ``y``'s own code, at the same
  element, before ``y`` writes it, and no other code reads the block (the blocks of several such values are
  disjoint), so the order of the writes does not matter. An LSTM's forward scan writes its four gates over
  the input products ``U x[t]`` they are computed from.
* **written back** (:func:`_write_backs`): a value ``y`` of the scan whose code would overwrite storage the
  step still reads (an LSTM's gate adjoints, computed from the gates that took the input products' storage) is
  computed into a one-step buffer and copied at the end of step ``t`` into row ``t`` of a dead buffer ``d`` of
  the same dims and shape (:func:`copy_back`); after the scan ``y`` is a view of ``d`` (``BufSpec.view``).
  Every value living in ``d`` must be read by the scan at step ``t`` only, and by no later stage.

With both, an LSTM gradient keeps one ``(T, B, 4H)`` array for the input products, then the gates, then the gates'
adjoints, where it kept two (the gates' four ``(T, B, H)`` arrays and one for the products and adjoints): a
segment gradient of ``checkpoint=k`` stores 6 ``(B, H)`` arrays per step instead of 10.

Rows of a split scan (row blocks on threads) are disjoint, and so are their copies.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rnnc.backends.cpu.emit import Buf, feat_ranges
from rnnc.backends.cpu.ops_ewise import member_reads, slice_offset, template_for
from rnnc.backends.cpu.rendered import BufSpec
from rnnc.ops.registry import ops_with

if TYPE_CHECKING:
    from rnnc.backends.cpu.render import Renderer

#: ops whose CPU templates read every input through Buf.at: the readers an offset buffer allows
_READERS = ops_with(alias_reader=True)


def plan_in_place(r: Renderer, stage) -> list:
    """Before a scan's buffers are allocated: bind the values written in place over a dead input's block (the
    inputs and the values go into ``r.in_place``: a read of one never meets another one's write, see
    :meth:`Renderer._joins`), and return the written-back values as
    ``[(value, step Buf, full Buf, bound)]`` for :func:`copy_back` and :func:`after_copies`."""
    k = r.stage_of[stage.nodes[0]]
    refs = {r.graph.value_of(ref) for ref in r.graph.refs()}
    _over_inputs(r, stage, k, refs)
    return _write_backs(r, stage, k, refs)


def _own_spec(r: Renderer, var: str):
    """The BufSpec of ``var`` if it is storage of its own (no view, no extra steps), else None."""
    spec = next((b for b in r.buffers if b.var == var), None)
    if spec is None or spec.view or spec.extra or any(b.view and b.view[0] == var for b in r.buffers):
        return None
    return spec


def _ewise(node) -> bool:
    return template_for(node.op) is not None and node.dtype == "float"


def _read_here(r: Renderer, node, k: int, axis) -> bool:
    """Is ``node`` read by stage ``k`` only at its own step and by no stage after ``k``?"""
    for u in r.users.get(node, ()):
        s = r.stage_of.get(u)
        if s is None or s > k or (s == k and axis not in u.axes):
            return False
    return True


def _over_inputs(r: Renderer, stage, k: int, refs: set) -> None:
    """The in-place case (module docstring)."""
    axis, feats = stage.axis, ["f0"]
    owners: dict = {}                     # input -> [(value, offset)]
    for y in stage.nodes:
        if not _ewise(y) or y not in r.keep or y in r.keep_roots or y in refs or y in r.bufs \
                or len(y.shape) != 1 or r.dims(y)[:1] != (axis,) \
                or not all(u.op in _READERS for u in r.users.get(y, ())):
            continue
        for x in dict.fromkeys(y.inputs):
            reads = [cf for src, cf in member_reads(y, feats) if src is x]
            offsets = {slice_offset(cf) for cf in reads}
            if len(offsets) == 1 and None not in offsets:
                owners.setdefault(x, []).append((y, offsets.pop()))
    for x, ys in owners.items():
        buf = r.bufs.get(x)
        if buf is None or buf.offset or buf.literal is not None or x in r.keep_roots or x in refs \
                or r.is_leaf(x) or tuple(buf.dims) != r.dims(x) or r.dims(x) != r.dims(ys[0][0]) \
                or any(y in r.bufs for y, _ in ys) or _own_spec(r, buf.var) is None \
                or r.stage_of.get(x, k) >= k or not _read_here(r, x, k, axis):
            continue
        mine = {y for y, _ in ys}
        if any(r.stage_of.get(u) == k and u not in mine for u in r.users[x]):
            continue                       # another reader in the scan: its reads could follow a write
        blocks = sorted((o, o + y.shape[0]) for y, o in ys)
        if any(a[1] > b[0] for a, b in zip(blocks, blocks[1:])) or blocks[-1][1] > x.shape[-1] \
                or len(ys) != len(mine):
            continue
        for y, o in ys:
            r.bufs[y] = Buf(buf.var, buf.dims, tuple(y.shape), buf.kind, offset=o)
            r.aliases.add(y)
        r.in_place |= mine | {x}


def _write_backs(r: Renderer, stage, k: int, refs: set) -> list:
    """The written-back case (module docstring)."""
    axis = stage.axis
    out, taken = [], set()
    for y in stage.nodes:
        if not (y in r.placed or _ewise(y)) or y not in r.keep or y in r.keep_roots or y in refs \
                or r.dims(y)[:1] != (axis,) or (y in r.bufs and y not in r.placed):
            continue
        kind = "i" if y.dtype == "int" else "f"
        donor = _donor(r, stage, k, refs, y, kind, taken)
        if donor is None:
            continue
        taken.add(donor.var)
        full = r.bufs[y] if y in r.placed else Buf(r.name(y), r.dims(y), tuple(y.shape), kind)
        step = Buf(r.name(y, "w"), tuple(d for d in full.dims if d != axis), full.shape, kind)
        r.buffers[:] = [b for b in r.buffers if b.var != full.var]
        r.buffers.append(BufSpec(full.var, full.dims, full.shape, kind, view=(donor.var, 0)))
        r.buffers.append(BufSpec(step.var, step.dims, step.shape, kind))
        bound = [n for n, b in r.bufs.items() if b.var == full.var and n is not y]     # a placed concat's inputs
        for n in bound:
            b = r.bufs[n]
            r.bufs[n] = Buf(step.var, step.dims, b.shape, b.kind, offset=b.offset)
        r.bufs[y] = step
        out.append((y, step, full, bound))
    return out


def _donor(r: Renderer, stage, k: int, refs: set, y, kind: str, taken: set):
    """A buffer that ``y`` can be written back into: same dims, shape and kind, read by this scan (else it is
    dead before the scan, and :func:`rnnc.backends.cpu.reuse.share_dead` gives its storage away with no copy),
    every value in it read at its own step by this scan or earlier stages only."""
    living: dict = {}
    for n, b in r.bufs.items():
        if b.literal is None:
            living.setdefault(b.var, []).append(n)
    for spec in r.buffers:
        if spec.var in taken or spec.kind != kind or tuple(spec.dims) != r.dims(y) \
                or tuple(spec.shape) != tuple(y.shape) or spec.var not in living or _own_spec(r, spec.var) is None:
            continue
        nodes = living[spec.var]
        if not any(r.stage_of.get(u) == k for n in nodes for u in r.users.get(n, ())):
            continue                       # dead before the scan: reuse.share_dead gives it away with no copy
        if y in nodes or any(n in r.keep_roots or n in refs or r.is_leaf(n) or not _read_here(r, n, k, stage.axis)
                             or any(u.op == "slice" and not _read_here(r, u, k, stage.axis)
                                    for u in r.users.get(n, ()))
                             for n in nodes):
            continue
        return spec
    return None


def copy_back(r: Renderer, copies: list) -> None:
    """At the end of a step: each written-back value's step buffer into its row of the full buffer."""
    for y, step, full, _bound in copies:
        dims = r.space(y)
        env = r.env(dims)
        feats = [v for v, _ in feat_ranges(y.shape)]
        r.em.tag = f"{full.var}[step] = {step.var}: written back over storage this step has read"
        r.em.where = y.where
        with r.em.loops(r.lead_ranges(dims) + feat_ranges(y.shape)):
            r.em.line(f"{full.at(env, feats)} = {step.at(env, feats)}")


def after_copies(r: Renderer, copies: list) -> None:
    """After the loop: later stages read each written-back value (and a placed concat's inputs) in full."""
    for y, _step, full, bound in copies:
        r.bufs[y] = full
        for n in bound:
            b = r.bufs[n]
            r.bufs[n] = Buf(full.var, full.dims, b.shape, b.kind, offset=b.offset)
