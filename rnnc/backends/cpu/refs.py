"""References ``s[t-k]`` in generated code.

* offset 0: the reference *is* the value's buffer (no code);
* in a map stage: a shifted copy, ``out[t] = s[t-k]`` where ``t-k`` is in range, else the initial value;
* in a scan along the reference's axis: per step, a view of the stored step ``s[t-k]`` or a buffer holding
  the initial value, filled once before the loop (no copy per step);
* in a scan, when the whole sequence of ``s[t-k]`` is kept for later stages (an LSTM's ``h[t-1]`` and
  ``c[t-1]``, read by the backward): no copy at all, but one array of ``n + k`` steps holding both, ``s`` at
  steps ``[k, n + k)`` and ``s[t-k]`` at ``[0, n)`` (reversed for a reverse scan); the first ``k`` steps hold
  the initial value, written before the loop (:func:`plan_lags`);
* in a scan, when nothing after the kernel reads ``s`` (:data:`rnnc.passes.dce.INTERNAL`) and the scan reads
  it only one step back: a *ring* of two step buffers, step ``t`` in slot ``t mod 2`` (:func:`plan_rings`), so
  no array of ``n`` steps at all (an LSTM gradient's ``d_h_tm1`` and ``d_c_tm1``).

With ``stream=True`` a read before index 0 takes the stored history ``hist[D + t - k]`` once ``started``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rnnc.backends.cpu.emit import Buf, feat_ranges
from rnnc.backends.cpu.rendered import BufSpec
from rnnc.ir.names import safe_comment
from rnnc.passes.dce import INTERNAL

if TYPE_CHECKING:
    from rnnc.backends.cpu.render import Renderer

HIST = "H"


def read_init(r: Renderer, ref, env, feats) -> str:
    """The element a shifted reference reads out of range: its initial value, or zero."""
    if not ref.inputs:
        return r.lit(0.0)
    init = ref.inputs[0]
    return r.read(init, env, feats, ref.shape)


def _shifted(r: Renderer, ref, env, feats, j: str) -> str:
    """Element of ``ref``'s value at shifted index ``j`` along its axis (range check included)."""
    axis = ref.attr("axis")
    value = r.graph.value_of(ref)
    src = dict(env)
    src[axis] = j
    inside = r.buf(value).at(src, feats)
    outside = read_init(r, ref, env, feats)
    name = ref.attr("value")
    if r.stream and name in r.hist:
        hvar, started, depth = r.hist[name]
        henv = dict(env)
        henv[HIST] = f"{depth} + {j}"
        hdims = tuple(HIST if d == axis else d for d in r.buf(value).dims)
        hist = Buf(hvar, hdims, value.shape).at(henv, feats)
        outside = f"({hist} if {started} else {outside})"
    return f"({inside} if ({j} >= 0 and {j} < {r.size(axis)}) else {outside})"


def _register_hist(r: Renderer, ref) -> None:
    name = ref.attr("value")
    if not r.stream or ref.attr("offset") >= 0:
        return
    depth = max(-n.attr("offset") for n in r.graph.refs() if n.attr("value") == name)
    k = len(r.hist)
    r.hist.setdefault(name, (f"hist{k}", f"started{k}", depth))


def shift_copy(r: Renderer, ref, out: Buf) -> None:
    """``out = value shifted by the reference's offset`` over the reference's index space."""
    _register_hist(r, ref)
    dims = r.space(ref)
    env = r.env(dims)
    feats = [v for v, _ in feat_ranges(ref.shape)]
    j = f"({r.var(ref.attr('axis')) if ref.attr('axis') not in env else env[ref.attr('axis')]} " \
        f"+ {ref.attr('offset')})"
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(ref.shape)):
        r.em.line(f"{out.at(env, feats)} = {_shifted(r, ref, env, feats, j)}")


def render_ref(r: Renderer, ref) -> None:
    value = r.graph.value_of(ref)
    if ref in r.lagged:        # a view of the value's array, filled as the value is computed
        return
    if not ref.attr("offset"):
        r.bufs[ref] = r.buf(value)
        return
    if ref in r.bufs:          # a scan reference prepared before the loop: choose the view for this step
        _step_view(r, ref)
        return
    shift_copy(r, ref, r.out(ref))


def _viewable(r: Renderer, ref) -> bool:
    axis = ref.attr("axis")
    if axis not in r.fixed or ref in r.keep:
        return False
    if r.graph.value_of(ref) in r.rings:
        return True
    vbuf = r.bufs.get(r.graph.value_of(ref))
    vdims = r.dims(r.graph.value_of(ref))
    return vdims and vdims[0] == axis and (vbuf is None or vbuf.var.startswith("v"))


def prepare_scan_refs(r: Renderer, stage) -> None:
    """Before a scan's loop: a fill buffer with the initial value for each reference that will be a view."""
    for ref in stage.nodes:
        if ref.op != "ref" or not ref.attr("offset") or not _viewable(r, ref):
            continue
        _register_hist(r, ref)
        dims = r.space(ref)
        fill = Buf(r.name(ref, "z"), tuple(dims), tuple(ref.shape))
        r.tag_node(ref, text=f"{fill.var} = initial value of {safe_comment(ref.label(), text=True)}")
        r.buffers.append(BufSpec(fill.var, fill.dims, fill.shape))
        _write_initial(r, ref, fill, dims, r.env(dims))
        r.bufs[ref] = Buf(r.name(ref, "r"), tuple(dims), tuple(ref.shape))
        r.ref_fill[ref] = fill


def _step_view(r: Renderer, ref) -> None:
    axis = ref.attr("axis")
    value = r.graph.value_of(ref)
    k, n = r.fixed[axis], r.size(axis)
    j = f"{k} + {ref.attr('offset')}"
    view = r.bufs[ref].var
    r.em.line(f"j_ = {j}")
    with r.em.block(f"if j_ >= 0 and j_ < {n}:"):
        if value in r.rings:
            even, odd = r.rings[value]
            r.em.line(f"{view} = {even} if j_ % 2 == 0 else {odd}")
        else:
            r.em.line(f"{view} = {r.buf(value).var}[j_]")
    with r.em.block("else:"):
        name = ref.attr("value")
        if r.stream and name in r.hist:
            hvar, started, depth = r.hist[name]
            with r.em.block(f"if {started}:"):
                r.em.line(f"{view} = {hvar}[{depth} + j_]")
            with r.em.block("else:"):
                r.em.line(f"{view} = {r.ref_fill[ref].var}")
        else:
            r.em.line(f"{view} = {r.ref_fill[ref].var}")


def plan_lags(r: Renderer, stage) -> None:
    """Before a scan's buffers are allocated: the references ``s[t-j]`` (``j`` steps back in the scan's order)
    to a value ``s`` of the same scan that later stages read whole share one array with ``s``. In a forward
    scan the array has ``n + k`` steps (``k`` the largest ``j``), ``s`` is steps ``[k, n + k)`` and ``s[t-j]``
    steps ``[k - j, n + k - j)``, so step ``t`` of a reference *is* step ``t - j`` of the value; a reverse scan
    mirrors this. Each reference's first ``j`` steps (its last ``j`` in a reverse scan) get the initial value
    before the loop, so the references of one value must share their initial value (else only the first is
    a view; the others are copied as before)."""
    axis, n = stage.axis, r.size(stage.axis)
    members = set(stage.nodes)
    groups: dict = {}
    for ref in stage.nodes:
        if ref.op != "ref" or ref not in r.keep or ref.attr("axis") != axis \
                or ref.attr("offset") * stage.direction >= 0:
            continue
        value = r.graph.value_of(ref)
        dims = r.dims(value)
        if value not in members or value in r.bufs or r.is_leaf(value) or value.op == "ref" or not dims \
                or dims[0] != axis or r.dims(ref) != dims or tuple(ref.shape) != tuple(value.shape) \
                or ref.dtype != value.dtype or any(axis in r.dims(i) for i in ref.inputs):
            continue
        group = groups.setdefault(value, [])
        if not group or tuple(group[0].inputs) == tuple(ref.inputs):
            group.append(ref)
    for value, refs in groups.items():
        dims, shape = r.dims(value), tuple(value.shape)
        kind = "i" if value.dtype == "int" else "f"
        lags = {ref: -ref.attr("offset") * stage.direction for ref in refs}
        k = max(lags.values())
        base = r.name(value, "t")
        r.buffers.append(BufSpec(base, dims, shape, kind, extra=k))
        starts = {value: k if stage.direction > 0 else 0}
        starts.update({ref: k - j if stage.direction > 0 else j for ref, j in lags.items()})
        for node, start in starts.items():
            r.bufs[node] = Buf(r.name(node), dims, shape, kind)
            r.buffers.append(BufSpec(r.name(node), dims, shape, kind, view=(base, start)))
        lead = [d for d in dims if d != axis]
        for ref, j in lags.items():
            r.lagged.add(ref)
            r.tag_node(ref, text=f"{r.bufs[ref].var} = initial value of {safe_comment(ref.label(), text=True)}")
            with r.em.block(f"for s_ in range(min({j}, {n})):"):
                r.em.line("j_ = s_" if stage.direction > 0 else f"j_ = {n} - 1 - s_")
                _write_initial(r, ref, r.bufs[ref], lead, {**r.env(lead), axis: "j_"})


def plan_rings(r: Renderer, stage) -> list:
    """Before a scan's buffers are allocated: the values of the scan kept in a ring of two step buffers
    (step ``t`` in slot ``t mod 2``), returned in order. A value ``s`` qualifies when no caller reads it after
    the kernel (it is in the graph's :data:`~rnnc.passes.dce.INTERNAL` names: not a result), the scan reads it
    only at its own step and through references ``s[t-j]`` exactly one step back in the scan's order, and code
    after the scan reads at most its step 0 (an ``edge_sum`` of offset -1) and only after a reverse scan, which
    writes step 0 last. Inside the loop ``s`` is a step buffer bound to its slot each step
    (:func:`pick_slots`), a reference ``s[t-1]`` a view of the other slot; after the loop readers of step 0
    read slot 0."""
    internal = set(r.graph.meta.get(INTERNAL, ()))
    members = set(stage.nodes)
    refs: dict = {}
    for ref in r.graph.refs():
        refs.setdefault(ref.attr("value"), []).append(ref)
    chosen = []
    for name, value in r.graph.values.items():
        if name in internal and value in members and _ring_fits(r, stage, value, refs.get(name, []), members):
            chosen.append(value)
    for value in chosen:
        dims = tuple(d for d in r.dims(value) if d != stage.axis)
        slots = (r.name(value, "qa"), r.name(value, "qb"))
        for var in slots:
            r.buffers.append(BufSpec(var, dims, tuple(value.shape), "i" if value.dtype == "int" else "f"))
        r.rings[value] = slots
        r.bufs[value] = Buf(r.name(value, "w"), dims, tuple(value.shape), "i" if value.dtype == "int" else "f")
    return chosen


def _ring_fits(r: Renderer, stage, value, refs: list, members: set) -> bool:
    axis = stage.axis
    dims = r.dims(value)
    if value in r.bufs or r.is_leaf(value) or value.op == "ref" or not dims or dims[0] != axis:
        return False
    for ref in refs:
        if ref not in members or ref in r.keep or ref.attr("axis") != axis \
                or ref.attr("offset") * stage.direction != -1 or any(axis in r.dims(i) for i in ref.inputs):
            return False
    last_is_zero = stage.direction < 0
    return all(u in members or (u.op == "edge_sum" and u.attr("axis") == axis and u.attr("offset") == -1
                                and last_is_zero) for u in r.users.get(value, ()))


def pick_slots(r: Renderer, rings: list) -> None:
    """At the top of a step: each ring value's step buffer is the slot of this step."""
    k = next(iter(r.fixed.values()), None)
    for value in rings:
        even, odd = r.rings[value]
        r.em.line(f"{r.bufs[value].var} = {even} if {k} % 2 == 0 else {odd}  # ring: step {k} in slot {k} % 2")


def after_rings(r: Renderer, rings: list) -> None:
    """After the loop: code reads a ring value's step 0 (the only step it may read, see :func:`plan_rings`)
    from slot 0."""
    for value in rings:
        step = r.bufs[value]
        r.bufs[value] = Buf(r.rings[value][0], step.dims, step.shape, step.kind)


def _write_initial(r: Renderer, ref, out: Buf, dims, env) -> None:
    """``out = ref's initial value`` over lead ``dims`` and the features (indices from ``env``)."""
    feats = [v for v, _ in feat_ranges(ref.shape)]
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(ref.shape)):
        r.em.line(f"{out.at(env, feats)} = {read_init(r, ref, env, feats)}")
