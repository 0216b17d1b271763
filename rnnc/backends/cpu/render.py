"""Rendering a scheduled graph into one Python module of ``@numba.njit(cache=True)`` code.

The module has one entry point ``run(sizes..., inputs..., params..., buffers...)`` that computes every stage
in order and writes results into preallocated buffers::

    map stage:   for each node: one loop nest over (all indices × batch × features), or one GEMM
    scan stage:  for s in range(n):              # reversed for a reverse scan
                     k = s  (or n - 1 - s)
                     for each node: its loop nest / GEMM at index k of the scan axis

Nodes a scan computes that nothing outside the scan reads live in *step* buffers (one step, reused);
everything else gets a *full* buffer. Op templates are looked up in :data:`rnnc.backends.cpu.ops.TEMPLATES`.

The renderer's parts: the emitter writes lines and structured pieces (:mod:`rnnc.backends.cpu.pieces`);
:mod:`~rnnc.backends.cpu.placement` decides views, placed concats and the prologue on the IR;
:mod:`~rnnc.backends.cpu.order` orders a stage's nodes; :mod:`~rnnc.backends.cpu.module` packs the stages'
code into functions and writes ``run``. Options are one frozen :class:`~rnnc.backends.cpu.rendered.RenderOptions`.
"""
from __future__ import annotations

import math

from rnnc.backends.cpu import placement
from rnnc.backends.cpu.emit import BATCH, Buf, Emitter, align_feats, feat_ranges
from rnnc.backends.cpu.functions import SPLIT_HI, SPLIT_LO
from rnnc.backends.cpu.inplace import after_copies, copy_back, plan_in_place
from rnnc.backends.cpu.module import finish
from rnnc.backends.cpu.ops import TEMPLATES
from rnnc.backends.cpu.ops_ewise import member_reads, program_of, render_ewise, render_ewise_group, same_step
from rnnc.backends.cpu.order import stable_order
from rnnc.backends.cpu.pieces import CUT, PIECE_END
from rnnc.backends.cpu.refs import after_rings, pick_slots, plan_lags, plan_rings, prepare_scan_refs, render_ref
from rnnc.backends.cpu.rendered import PLAIN, BufSpec, Rendered, RenderOptions
from rnnc.backends.cpu.reuse import share_dead
from rnnc.backends.cpu.sink import sink_step_products
from rnnc.errors import RnncError
from rnnc.ir.graph import Graph
from rnnc.ir.names import check_graph_names, code_name, prefixed, safe_comment
from rnnc.ops.registry import LEAVES, ops_with
from rnnc.schedule.schedule import Schedule, build_schedule


class MissingTemplate(RnncError):
    """An op has no CPU template."""


# sibling loops share one nest only up to this many features per element: an LSTM step at H = 512, B = 128
# fused into one nest streams ~17 arrays of 256 KiB each through it and ran slower than separate nests
# (forward 176 vs 137 ms, measured); at H <= 256 one nest is faster
GROUP_MAX_FEATURES = 256
# ... or, past that size, while the nest touches at most this many arrays: a conv layer's bias, ReLU and ReLU
# mask over a 128 x 16 x 28 x 28 map (two arrays read, three written) in one nest instead of three
GROUP_MAX_ARRAYS = 6

# ops whose templates index the batch only through Renderer.lead_ranges / _rows_view, so a scan built of them
# (and of batched values only) runs as independent row blocks of the batch, one per thread (see _row_local)
# (the op table's ``row_local`` property, see rnnc.ops.registry.OpDef)
ROW_LOCAL_OPS = ops_with(row_local=True)
LEAF_OPS = LEAVES

# ops whose CPU templates read every input through Buf.at (so an offset alias is safe)
ALIAS_READERS = ops_with(alias_reader=True)

#: ops a comment writes as infix operators
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@"}
#: the longest expression a comment shows (a fused program of 64 instructions would fill a screen)
MAX_EXPRESSION = 120


def expression(node, operands) -> str:
    """``node``'s computation over the variables ``operands`` of its inputs, for a comment: a fused program as
    one nested expression (``tanh(v7 + w10 + p11_b)``), each part cut at :data:`MAX_EXPRESSION` characters."""
    def cut(text: str) -> str:
        return text if len(text) <= MAX_EXPRESSION else text[:MAX_EXPRESSION - 3] + "..."

    def operand(part, op: str, left: bool) -> str:
        text, inner = part                # a chain a + b + c needs no parentheses on its left
        return text if inner not in _INFIX or (left and inner == op and op in ("add", "mul")) else f"({text})"

    exprs: list = []                      # (text, op) of each instruction
    for op, _shape, _attrs, args in program_of(node):
        vals = [exprs[a[1]] if a[0] == "t" else (operands[a[1]], None) for a in args]
        if op in _INFIX and len(vals) == 2:
            text = f"{operand(vals[0], op, True)} {_INFIX[op]} {operand(vals[1], op, False)}"
        else:
            text = f"{safe_comment(op, bare=True)}({', '.join(t for t, _ in vals)})"
        exprs.append((cut(text), op))
    return exprs[-1][0]


class Renderer:
    """Turns ``graph`` (with its schedule) into a module; ``stream=True`` reads shifted values that fall
    before index 0 of the (forward, single) scan axis from history arguments instead of initial values;
    ``options`` say which optimisations run (:data:`~rnnc.backends.cpu.rendered.KERNEL` for the CPU kernel)."""

    def __init__(self, graph: Graph, dtype: str, sched: Schedule | None = None, stream: bool = False,
                 options: RenderOptions = PLAIN):
        check_graph_names(graph)        # names reach comments only, and only once checked (rnnc.ir.names)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.graph, self.dtype, self.stream, self.options = graph, dtype, stream, options
        self.schedule = sched or build_schedule(graph)
        if options.lag_views and not stream:
            self.schedule = sink_step_products(graph, self.schedule)
        self.axes = graph.axes()
        self.axis_no = {a: k for k, a in enumerate(self.axes)}
        self.order = {n: k for k, n in enumerate(graph.nodes)}
        self.bufs: dict = {}
        self.buffers: list[BufSpec] = []
        self.leaves: dict = {}
        self.em = Emitter()
        self.named = {n: name for name, n in graph.values.items()}        # the user's names of unnamed nodes
        self.named.update({n: name for name, n in graph.outputs.items()})
        self.named.update({n: f"d_{name}" for name, n in graph.grads.items()})
        self.hist: dict = {}
        self.fixed: dict = {}            # scan axis -> its loop variable, inside a scan
        self.step_nodes: set = set()
        self.keep: set = set()
        self.ref_fill: dict = {}
        self.lagged: set = set()         # references that are views of their value's array (plan_lags)
        self.rings: dict = {}            # value -> its two slot buffers (refs.plan_rings)
        self.in_place: set = set()       # inputs written over block by block, and those blocks (inplace.py)
        self.aliases: set = set()
        self.prologue: list = []
        self.after: dict = {}            # stage number -> numpy statements run after its function
        self.placed: set = set()         # concats whose inputs write straight into their buffer
        self.in_prologue: set = set()    # axis-free nodes run() computes before the stages
        self.batch_span = False          # rendering a split scan: the batch loops run over [b0_, b1_)
        self.split_stages: set = set()   # stage numbers rendered as row blocks
        self.image_kernels = False       # the code calls image kernels (Numba's threads: see Rendered.prange)

    # ------------------------------------------------------------------ naming
    def var(self, dim) -> str:
        return "ib" if dim == BATCH else f"i{self.axis_no[dim]}"

    def size(self, dim) -> str:
        return "nb" if dim == BATCH else f"n{self.axis_no[dim]}"

    def user_name(self, node) -> str | None:
        """The user's name of ``node``'s value (its own, a reference's value's, an output's), if any."""
        if node.op == "ref":
            return node.attr("value")
        return node.name if node.name is not None else self.named.get(node)

    def name(self, node, prefix="v") -> str:
        """The variable of ``node``: ``<prefix><number>``, then ``_<name>`` if the user's name is plain ASCII
        (:func:`rnnc.ir.names.prefixed`): ``v12_h``. Names decide no identifier in any other way."""
        return prefixed(f"{prefix}{self.order[node]}", self.user_name(node))

    def is_leaf(self, node) -> bool:
        return node.op in LEAF_OPS

    def dims(self, node) -> tuple:
        return tuple(node.axes) + ((BATCH,) if node.batched else ())

    def lit(self, value: float) -> str:
        return f"F({float(value)!r})"

    def var_of(self, node) -> str:
        """The variable (or constant) code reads ``node`` from, for a comment; its buffer's once it has one."""
        while node.op == "ref" and not node.attr("offset") and node not in self.bufs:
            node = self.graph.value_of(node)
        if node.op == "const":
            return repr(float(node.attr("value")))
        if node in self.bufs:
            return self.bufs[node].var
        return self.name(node, "w" if node in self.step_nodes else "v")

    def describe(self, node) -> str:
        """The comment on ``node``'s code in the code's own variables: ``v12_h = tanh((v7 + w10) + p11_b)``; a
        name that is no identifier of the code follows as a quoted literal. The user's ``file:line`` is not in
        it (the module is cached by structure): see :class:`rnnc.backends.cpu.emit.Note`."""
        if node.op == "ref":
            return f"{self.var_of(node)} = {safe_comment(node.label(), text=True)}"
        name = self.user_name(node)
        label = f" {safe_comment(name)}" if name is not None and not code_name(name) else ""
        return f"{self.var_of(node)} = {expression(node, [self.var_of(i) for i in node.inputs])}{label}"

    def tag_node(self, node, suffix: str = "", text: str | None = None) -> None:
        """Name ``node`` (:meth:`describe`, or ``text``) and its ``file:line`` in the comment of the lines that
        follow."""
        self.em.tag = (self.describe(node) if text is None else text) + suffix
        self.em.where = node.where

    # ------------------------------------------------------------------ buffers
    def buf(self, node) -> Buf:
        if node in self.bufs:
            return self.bufs[node]
        if node.op == "const":
            return Buf("", (), (), literal=self.lit(node.attr("value")))
        raise RnncError(f"internal: {node!r} is read before it is computed")

    def new_buf(self, node, step: bool = False, prefix: str = "v") -> Buf:
        dims = self.dims(node)
        if step:
            dims = tuple(d for d in dims if d not in self.fixed)
            prefix = "w"
        kind = "i" if node.dtype == "int" else "f"
        b = Buf(self.name(node, prefix), dims, tuple(node.shape), kind)
        self.buffers.append(BufSpec(b.var, dims, b.shape, kind))
        self.bufs[node] = b
        return b

    def out(self, node) -> Buf:
        """The buffer a template writes ``node`` into (allocated on first use)."""
        if node in self.bufs:
            return self.bufs[node]
        return self.new_buf(node, step=node in self.step_nodes)

    # ------------------------------------------------------------------ index spaces
    def space(self, node) -> list:
        """The lead dims a template loops over for ``node`` (a scan's axis is fixed, not looped)."""
        return [d for d in self.dims(node) if d not in self.fixed]

    def env(self, dims=()) -> dict:
        out = {a: v for a, v in self.fixed.items()}
        out.update({d: self.var(d) for d in dims})
        return out

    def lead_ranges(self, dims) -> list:
        """``(loop var, range arguments)`` for ``dims``; the batch runs over the row block in a split scan."""
        return [(self.var(d), f"{SPLIT_LO}, {SPLIT_HI}" if d == BATCH and self.batch_span else self.size(d))
                for d in dims]

    def sized_by(self, ranges, buf: Buf) -> list:
        """``ranges`` with the innermost loop's size read off ``buf``'s array (``v.shape[k]``, the same number)
        when that loop runs over ``buf``'s last feature dim. LLVM vectorises a loop of unknown trip count
        behind one overlap check, but leaves a short constant one (``range(28)``) scalar: an image op's
        elementwise nest ran 3.4x faster this way (0.67 -> 0.20 ms, measured)."""
        if not ranges or not buf.shape or buf.literal is not None or buf.offset:
            return ranges
        own = next((b for b in self.buffers if b.var == buf.var), None)
        if own is None or tuple(own.shape) != tuple(buf.shape) or tuple(own.dims) != tuple(buf.dims):
            return ranges       # a leaf, or a view of part of a wider buffer (a concat's input written in place)
        var, size, *rest = ranges[-1]
        if var != f"f{len(buf.shape) - 1}" or size != str(buf.shape[-1]):
            return ranges
        return ranges[:-1] + [(var, f"{buf.var}.shape[{len(buf.dims) + len(buf.shape) - 1}]", *rest)]

    def fill_loops(self, node, out: Buf, expr_fn):
        """``out[idx] = expr_fn(env, feats)`` over the node's whole index space."""
        dims = self.space(node)
        env = self.env(dims)
        feats = [v for v, _ in feat_ranges(node.shape)]
        with self.em.loops(self.sized_by(self.lead_ranges(dims) + feat_ranges(node.shape), out)):
            self.em.line(f"{out.at(env, feats)} = {expr_fn(env, feats)}")

    def read(self, node, env, feats, out_shape) -> str:
        """Element of input ``node`` broadcast to an output of feature shape ``out_shape``."""
        return self.buf(node).at(env, align_feats(feats, out_shape, node.shape))

    # ------------------------------------------------------------------ the module
    def render(self) -> Rendered:
        self._bind_leaves()
        self._plan_steps()
        self.users: dict = {}
        for n in self.graph.nodes:
            for i in n.inputs:
                self.users.setdefault(i, []).append(n)
        self.keep_roots = set(self.graph.roots()) | {r.inputs[0] for r in self.graph.refs() if r.inputs}
        self.stage_of = {n: k for k, s in enumerate(self.schedule, 1) for n in s.nodes}
        if self.options.alias_slices:
            placement.place_concats(self, ALIAS_READERS)
        body = self.em
        body.depth = 1
        self.spans: list = []
        for k, stage in enumerate(self.schedule, 1):
            start = len(body.lines)
            body.tag = ""
            body.line(f"# ---- stage {k}: {stage.kind}" + (f" over {safe_comment(stage.axis.name, bare=True)}, "
                      f"{'forward' if stage.direction > 0 else 'reverse'}" if stage.kind == "scan" else ""))
            stage = stable_order(self.graph, self.order, stage)
            split = self.options.split_scans and not self.stream
            if stage.kind == "scan":
                self.batch_span = split and self._row_local(stage)
                self._scan(stage, TEMPLATES, render_ref)
                if self.batch_span:
                    self.split_stages.add(k)
                self.batch_span = False
            elif split:
                for local, run in self._row_local_runs(stage):
                    self.batch_span = local
                    if local:
                        body.mark(PIECE_END)         # a piece of its own, called in row blocks
                        self.split_stages.add(k)
                    self._nodes(run, TEMPLATES, render_ref, stage_no=k)
                    if local:
                        body.mark(PIECE_END)
                    self.batch_span = False
            else:
                self._nodes(stage.nodes, TEMPLATES, render_ref, stage_no=k)
            self.spans.append((k, start, len(body.lines)))
        return self._finish()

    def _finish(self) -> Rendered:
        out = finish(self)
        if self.options.reuse_buffers:
            # kept: what the runtime reads after run(), and buffers that hold no node's value (an image kernel's
            # scratch relies on its never-written padding staying zero)
            values = {b.var for b in self.bufs.values()}
            pinned = {out.results[n] for n in self.graph.roots() if n in out.results}
            out.buffers = share_dead(out.buffers, out.uses, pinned | {b.var for b in out.buffers} - values)
        return out

    def _nodes(self, nodes, templates, render_ref, stage_no=None):
        """Render ``nodes`` in order; on the CPU, runs of sibling elementwise nodes share one loop nest."""
        group: list = []
        for node in nodes:
            if stage_no is not None:
                self.em.mark(CUT)            # whole loop nests before it: a long map stage may be cut here
            if stage_no is not None and self.options.numpy_prologue and (
                    placement.to_prologue(self, node) or placement.to_epilogue(self, node, stage_no)):
                continue
            if node.op in ("input", "param", "lengths", "const") or node in self.placed:
                continue
            if node.op == "ref" and not node.attr("offset"):
                self._node(node, templates, render_ref)     # the value's own buffer: no code
                continue
            if self.options.alias_slices and templates.get(node.op) is render_ewise:
                if placement.alias_slice(self, node, ALIAS_READERS):
                    continue
                if group and self._joins(group, node):
                    group.append(node)
                    continue
                if group:
                    render_ewise_group(self, group)
                group = [node]
                continue
            if group:
                render_ewise_group(self, group)
                group = []
            self._node(node, templates, render_ref)
        if group:
            render_ewise_group(self, group)

    def _joins(self, group, node) -> bool:
        """May ``node`` share the loop nest of ``group``: same index space, and no element of a member's
        buffer read at another index or through another name (a slice view, a stacked buffer)?"""
        from rnnc.passes.fuse import MAX_FUSED

        first = group[0]
        if self.space(node) != self.space(first) or node.shape != first.shape:
            return False
        if sum(len(program_of(m)) for m in group + [node]) > MAX_FUSED:
            return False        # a loop body of bounded size, as a fused program's (compile time: see fuse.py)
        feats = [f"f{k}" for k in range(len(node.shape))]
        if math.prod(node.shape) > GROUP_MAX_FEATURES and len(self._arrays(group + [node], feats)) > GROUP_MAX_ARRAYS:
            return False
        members = set(group)
        written = {self.out(m).var for m in group}
        for src, cf in member_reads(node, feats):
            src = same_step(self, src)
            if src in members:
                if cf != feats:
                    return False
            elif self.buf(src).var in written and src not in self.in_place:
                return False
        mine = self.out(node).var
        return not any(self.buf(src).var == mine and same_step(self, src) is not node and src not in self.in_place
                       for m in group for src, _ in member_reads(m, feats))

    def _arrays(self, nodes, feats) -> set:
        """Array names that one loop nest computing ``nodes`` reads or writes."""
        names = {self.out(m).var for m in nodes}
        for m in nodes:
            names |= {self.buf(same_step(self, src)).var for src, _ in member_reads(m, feats)}
        return names - {""}

    def _node(self, node, templates, render_ref):
        if node.op in ("input", "param", "lengths", "const"):
            return
        self.tag_node(node)
        if node.op == "ref":
            render_ref(self, node)
            return
        if self.options.alias_slices and placement.alias_slice(self, node, ALIAS_READERS) or node in self.placed:
            return
        fn = templates.get(node.op)
        if fn is None:
            raise MissingTemplate(f"op {node.op!r} has no CPU template (node {node.label()} at {node.where}); "
                                  f"add one to rnnc/backends/cpu/ops.py")
        fn(self, node)

    def _scan(self, stage, templates, render_ref):
        axis = stage.axis
        k, n = self.var(axis), self.size(axis)
        self.em.tag = f"scan over {safe_comment(axis.name, bare=True)}"
        self.fixed = {axis: k}
        rings, copies = [], []
        if self.options.lag_views and not self.stream:
            plan_lags(self, stage)
            rings = plan_rings(self, stage)
            copies = plan_in_place(self, stage)
        for node in stage.nodes:
            if node.op not in ("ref", "input", "param", "lengths", "const"):
                self.out(node)
        prepare_scan_refs(self, stage)
        self.em.tag = f"scan over {safe_comment(axis.name, bare=True)}"
        with self.em.block(f"for s_ in range({n}):"):
            self.em.line(f"{k} = s_" if stage.direction > 0 else f"{k} = {n} - 1 - s_")
            pick_slots(self, rings)
            self._nodes(stage.nodes, templates, render_ref)
            copy_back(self, copies)
        after_rings(self, rings)
        after_copies(self, copies)
        self.fixed = {}

    def _row_local(self, stage) -> bool:
        """Does every node of the scan compute batch row ``b`` from row ``b`` of its inputs only (batched
        values, ops in :data:`ROW_LOCAL_OPS`)? Then the rows of the batch are independent recurrences, and the
        whole scan, time loop included, can run as row blocks on separate threads with no synchronisation
        per step."""
        return all(n.op in LEAF_OPS or (n.op in ROW_LOCAL_OPS and n.batched) for n in stage.nodes)

    def _row_local_runs(self, stage) -> list:
        """A map stage's nodes as runs ``(row_local, nodes)`` in order: a run of row-local nodes (batched, in
        :data:`ROW_LOCAL_OPS`, not a product, which runs in row blocks of its own) becomes a piece of its own,
        called in row blocks of the batch like a split scan (the loss's and the gradients' elementwise maps:
        ~1 ms of an LSTM T50 B32 step on one thread)."""
        runs: list = []
        for n in stage.nodes:
            if n.op in LEAF_OPS:
                continue
            local = n.op in ROW_LOCAL_OPS and n.op != "matmul" and n.batched
            if runs and runs[-1][0] == local:
                runs[-1][1].append(n)
            else:
                runs.append((local, [n]))
        return runs

    def _bind_leaves(self):
        for _name, node in list(self.graph.inputs.items()) + list(self.graph.params.items()):
            if node not in self.order:
                continue
            prefix = "p" if node.op == "param" else ("l" if node.op == "lengths" else "x")
            b = Buf(self.name(node, prefix), self.dims(node), tuple(node.shape),
                    "i" if node.dtype == "int" else "f")
            self.bufs[node] = b
            self.leaves[b.var] = node

    def _plan_steps(self):
        """Nodes of a scan that nothing outside the scan reads get step buffers."""
        stage_of = {n: k for k, s in enumerate(self.schedule) for n in s.nodes}
        keep = set(self.graph.roots())
        for n in self.graph.nodes:
            if n.op == "ref":
                keep.add(self.graph.value_of(n))
                if n.inputs:
                    keep.add(n.inputs[0])
            for i in n.inputs:
                if stage_of.get(i) != stage_of.get(n):
                    keep.add(i)
        self.keep = keep
        for s in self.schedule:
            if s.kind == "scan":
                self.step_nodes |= {n for n in s.nodes if n not in keep and n.op != "ref"}


__all__ = ["Renderer", "Rendered", "RenderOptions", "BufSpec", "MissingTemplate", "align_feats"]
