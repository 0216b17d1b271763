"""Rendering a scheduled graph into one Python module of ``@numba.njit(cache=True)`` code.

The module has one entry point ``run(sizes..., inputs..., params..., buffers...)`` that computes every stage
in order and writes results into preallocated buffers::

    map stage:   for each node: one loop nest over (all indices × batch × features), or one GEMM
    scan stage:  for s in range(n):              # reversed for a reverse scan
                     k = s  (or n - 1 - s)
                     for each node: its loop nest / GEMM at index k of the scan axis

Nodes a scan computes that nothing outside the scan reads live in *step* buffers (one step, reused);
everything else gets a *full* buffer. Op templates are looked up in :data:`rnnc.backends.cpu.ops.TEMPLATES`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rnnc.backends.cpu.emit import BATCH, Buf, Emitter, align_feats, feat_ranges, one_line_breaks
from rnnc.backends.cpu.functions import CUT_MARK, PIECE_MARK, RUN_MARK, SPLIT_HI, SPLIT_LO, stage_functions
from rnnc.backends.cpu.prologue import prologue_lines
from rnnc.errors import RnncError
from rnnc.ir.graph import Graph
from rnnc.ir.names import check_graph_names, safe_comment
from rnnc.ops.registry import LEAVES, ops_with
from rnnc.schedule.schedule import Schedule, build_schedule


class MissingTemplate(RnncError):
    """An op has no CPU template."""


@dataclass
class BufSpec:
    """A buffer the runtime allocates: ``dims`` (axes / BATCH) then ``shape``; ``extra`` more entries along
    ``dims[0]``; or, with ``view = (base, start)``, no storage of its own but ``base[start:start + n]`` along
    ``dims[0]`` (a value and its lagged reference sharing one array, :func:`rnnc.backends.cpu.refs.plan_lags`)."""

    var: str
    dims: tuple
    shape: tuple
    kind: str = "f"
    extra: int = 0
    view: tuple = ()


@dataclass
class Rendered:
    """What rendering gives the runtime."""

    source: str
    args: list                   # argument names of run(), in order
    sizes: list                  # (var, Axis or BATCH) size arguments
    leaves: dict                 # var -> leaf node (inputs, params, lengths)
    buffers: list                # BufSpec to allocate
    results: dict = field(default_factory=dict)   # node -> var of its full buffer
    hist: dict = field(default_factory=dict)      # value name -> (hist var, started var, depth) (stream)


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


class Renderer:
    """Turns ``graph`` (with its schedule) into a module; ``stream=True`` reads shifted values that fall
    before index 0 of the (forward, single) scan axis from history arguments instead of initial values."""

    alias_slices = False     # the CPU kernel turns these on (see _alias, _prologue); other renderers reuse
    numpy_prologue = False   # the class and its templates
    vector_math = False      # tanh / sigmoid through vectorisable helpers (float32: no libm call)
    split_scans = False      # row-local scans run as row blocks of the batch on several threads (_row_local)
    lag_views = False        # a scan's kept reference s[t-k] shares its value's array, k steps apart (refs.py)
    parallel_gemms = False   # a map stage's products run as row blocks on several threads (kernels_linalg)

    def __init__(self, graph: Graph, dtype: str, sched: Schedule | None = None, stream: bool = False):
        check_graph_names(graph)        # names reach comments only, and only once checked (rnnc.ir.names)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.graph, self.dtype, self.stream = graph, dtype, stream
        self.schedule = sched or build_schedule(graph)
        self.axes = graph.axes()
        self.axis_no = {a: k for k, a in enumerate(self.axes)}
        self.order = {n: k for k, n in enumerate(graph.nodes)}
        self.bufs: dict = {}
        self.buffers: list[BufSpec] = []
        self.leaves: dict = {}
        self.em = Emitter()
        self.hist: dict = {}
        self.fixed: dict = {}            # scan axis -> its loop variable, inside a scan
        self.step_nodes: set = set()
        self.keep: set = set()
        self.ref_fill: dict = {}
        self.lagged: set = set()         # references that are views of their value's array (plan_lags)
        self.aliases: set = set()
        self.prologue: list = []
        self.after: dict = {}            # stage number -> numpy statements run after its function
        self.placed: set = set()         # concats whose inputs write straight into their buffer
        self.in_prologue: set = set()    # axis-free nodes run() computes before the stages
        self.batch_span = False          # rendering a split scan: the batch loops run over [b0_, b1_)
        self.split_stages: set = set()   # stage numbers rendered as row blocks

    # ------------------------------------------------------------------ naming
    def var(self, dim) -> str:
        return "ib" if dim == BATCH else f"i{self.axis_no[dim]}"

    def size(self, dim) -> str:
        return "nb" if dim == BATCH else f"n{self.axis_no[dim]}"

    def name(self, node, prefix="v") -> str:
        return f"{prefix}{self.order[node]}"

    def dims(self, node) -> tuple:
        return tuple(node.axes) + ((BATCH,) if node.batched else ())

    def lit(self, value: float) -> str:
        return f"F({float(value)!r})"

    def describe(self, node) -> str:
        args = ", ".join(self.name(i) for i in node.inputs)
        label = f" {safe_comment(node.name)}" if node.name else ""
        return f"{self.name(node)} = {node.op}({args}){label}"    # no source location: see graph_key

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
        from rnnc.backends.cpu.ops import TEMPLATES
        from rnnc.backends.cpu.refs import render_ref

        self._bind_leaves()
        self._plan_steps()
        self.users: dict = {}
        for n in self.graph.nodes:
            for i in n.inputs:
                self.users.setdefault(i, []).append(n)
        self.keep_roots = set(self.graph.roots()) | {r.inputs[0] for r in self.graph.refs() if r.inputs}
        self.stage_of = {n: k for k, s in enumerate(self.schedule, 1) for n in s.nodes}
        if self.alias_slices:
            self._place_concats()
        body = self.em
        body.depth = 1
        self.spans: list = []
        for k, stage in enumerate(self.schedule, 1):
            start = len(body.lines)
            body.tag = ""
            body.line(f"# ---- stage {k}: {stage.kind}" + (f" over {safe_comment(stage.axis.name, bare=True)}, "
                      f"{'forward' if stage.direction > 0 else 'reverse'}" if stage.kind == "scan" else ""))
            stage = _stable(self, stage)
            if stage.kind == "scan":
                self.batch_span = self.split_scans and not self.stream and self._row_local(stage)
                self._scan(stage, TEMPLATES, render_ref)
                if self.batch_span:
                    self.split_stages.add(k)
                self.batch_span = False
            elif self.split_scans and not self.stream:
                for local, run in self._row_local_runs(stage):
                    self.batch_span = local
                    if local:
                        body.line(PIECE_MARK)        # a piece of its own, called in row blocks
                        self.split_stages.add(k)
                    self._nodes(run, TEMPLATES, render_ref, stage_no=k)
                    if local:
                        body.line(PIECE_MARK)
                    self.batch_span = False
            else:
                self._nodes(stage.nodes, TEMPLATES, render_ref, stage_no=k)
            self.spans.append((k, start, len(body.lines)))
        return self._finish()

    def _nodes(self, nodes, templates, render_ref, stage_no=None):
        """Render ``nodes`` in order; on the CPU, runs of sibling elementwise nodes share one loop nest."""
        from rnnc.backends.cpu.ops_ewise import render_ewise, render_ewise_group

        group: list = []
        for node in nodes:
            if stage_no is not None:
                self.em.line(CUT_MARK)       # whole loop nests before it: a long map stage may be cut here
            if stage_no is not None and self.numpy_prologue and (
                    self._prologue(node) or self._epilogue(node, stage_no)):
                continue
            if node.op in ("input", "param", "lengths", "const") or node in self.placed:
                continue
            if node.op == "ref" and not node.attr("offset"):
                self._node(node, templates, render_ref)     # the value's own buffer: no code
                continue
            if self.alias_slices and templates.get(node.op) is render_ewise:
                if self._alias(node):
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
        from rnnc.backends.cpu.ops_ewise import member_reads, program_of, same_step
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
            elif self.buf(src).var in written:
                return False
        mine = self.out(node).var
        return not any(self.buf(src).var == mine and same_step(self, src) is not node
                       for m in group for src, _ in member_reads(m, feats))

    def _arrays(self, nodes, feats) -> set:
        """Array names that one loop nest computing ``nodes`` reads or writes."""
        from rnnc.backends.cpu.ops_ewise import member_reads, same_step

        names = {self.out(m).var for m in nodes}
        for m in nodes:
            names |= {self.buf(same_step(self, src)).var for src, _ in member_reads(m, feats)}
        return names - {""}

    def _node(self, node, templates, render_ref):
        if node.op in ("input", "param", "lengths", "const"):
            return
        self.em.tag = self.describe(node)
        if node.op == "ref":
            render_ref(self, node)
            return
        if self.alias_slices and self._alias(node) or node in self.placed:
            return
        fn = templates.get(node.op)
        if fn is None:
            raise MissingTemplate(f"op {node.op!r} has no CPU template (node {node.label()} at {node.where}); "
                                  f"add one to rnnc/backends/cpu/ops.py")
        fn(self, node)

    def _prologue(self, node) -> bool:
        """Axis-free reshuffles of parameters (the transposes and concats that stack an LSTM's gate matrices)
        run once per call as numpy statements in ``run`` itself: no loop nest for Numba to compile."""
        if node.op not in ("transpose", "concat") or self.dims(node) or node in self.keep_roots:
            return False
        if not all(i.op == "param" or i in self.in_prologue for i in node.inputs):
            return False          # run() does the prologue before every stage: params and prologue values only
        ins = [self.bufs.get(i) for i in node.inputs]
        if any(b is None or b.literal is not None or b.offset or b.dims for b in ins):
            return False
        self.in_prologue.add(node)
        out = self.out(node)
        tag = f"  # {self.describe(node)}"
        self.prologue.append((out.var, node.op, [b.var for b in ins], tag))     # lines: prologue.py
        return True

    def _epilogue(self, node, stage_no: int) -> bool:
        """Row / feature splits of axis-free results (stacked weight gradients) that no later code of their
        stage reads: numpy copies in ``run`` after the stage's function (no loop nest to compile)."""
        if node.op not in ("take_rows", "slice") or self.dims(node):
            return False
        src = self.bufs.get(node.inputs[0])
        if src is None or src.literal is not None or src.offset or src.dims:
            return False
        if any(self.stage_of.get(u) == stage_no for u in self.users.get(node, ())):
            return False
        a, b = node.attr("start"), node.attr("stop")
        cut = f"[{a}:{b}]" if node.op == "take_rows" else f"[..., {a}:{b}]"
        self.after.setdefault(stage_no, []).append(
            f"    np.copyto({self.out(node).var}, {src.var}{cut})  # {self.describe(node)}")
        return True

    def _place_concats(self) -> None:
        """A ``concat`` whose inputs are each computed by elementwise code (which writes through
        :meth:`Buf.at`) and read only by such code gets its buffer first; each input is then an offset view
        of it, so the inputs are written in place and the concat costs nothing (an LSTM's gate adjoints,
        stacked for one weight-gradient product). Other readers may be another ``concat`` (a GRU stacks the
        same adjoints twice, in two orders: the first stack is placed, the second copies out of it) and a
        scan's per-step product (a strided view, :meth:`_strided_product`)."""
        value_of_refs = {self.graph.value_of(r) for r in self.graph.refs()}
        taken: set = set()
        for node in self.graph.nodes:
            if node.op != "concat" or node in self.keep_roots or node in self.bufs or not self.dims(node):
                continue
            ins = node.inputs
            step = node in self.step_nodes
            if len(set(ins)) != len(ins) or any(
                    i.op not in ALIAS_READERS or i.op == "slice" or i in self.bufs or i in taken or i in self.keep_roots
                    or i in value_of_refs or self.dims(i) != self.dims(node) or (step and i not in self.step_nodes)
                    or len(i.shape) != 1
                    or not all(u is node or u.op in ALIAS_READERS or u.op == "concat" or self._strided_product(u, i)
                               for u in self.users.get(i, ()))
                    for i in ins):
                continue
            fixed, self.fixed = self.fixed, {}
            if step:
                scan = self.schedule[self.stage_of[node] - 1]
                self.fixed = {scan.axis: self.var(scan.axis)}
            whole = self.new_buf(node, step=step)
            self.fixed = fixed
            at = 0
            for i in ins:
                self.bufs[i] = Buf(whole.var, whole.dims, tuple(i.shape), whole.kind, offset=at)
                self.aliases.add(i)
                taken.add(i)
                at += i.shape[0]
            self.placed.add(node)

    def _strided_product(self, user, value) -> bool:
        """Can ``user``, a product, read ``value`` as a strided view of a placed concat (one ``gk.dot`` per step
        on the view's rows: a scan's product on batch rows)? Elsewhere it would fall back to scalar loops."""
        if user.op != "matmul" or user.inputs[1] is not value or user not in self.stage_of:
            return False
        stage = self.schedule[self.stage_of[user] - 1]
        dims = list(self.dims(user))
        return stage.kind == "scan" and stage.axis in dims and dims[dims.index(stage.axis) + 1:] == [BATCH]

    def _alias(self, node) -> bool:
        """A ``slice`` read only by elementwise code (which indexes through :meth:`Buf.at`) is no copy but
        an offset view of its input's buffer (an LSTM's gate blocks of one merged GEMM result)."""
        if node.op != "slice" or node in self.keep_roots or not self.users.get(node) or node in self.aliases:
            return False
        src = self.bufs.get(node.inputs[0])
        if src is None or src.literal is not None or self.dims(node) != self.dims(node.inputs[0]):
            return False
        if node in self.keep and tuple(src.dims) != tuple(self.dims(node)):
            return False        # read after its scan, but its source is a one-step buffer
        if not all(u.op in ALIAS_READERS for u in self.users[node]):
            return False
        self.bufs[node] = Buf(src.var, src.dims, tuple(node.shape), src.kind, offset=src.offset + node.attr("start"))
        self.aliases.add(node)
        return True

    def _scan(self, stage, templates, render_ref):
        axis = stage.axis
        k, n = self.var(axis), self.size(axis)
        self.em.tag = f"scan over {safe_comment(axis.name, bare=True)}"
        from rnnc.backends.cpu.refs import plan_lags, prepare_scan_refs

        self.fixed = {axis: k}
        if self.lag_views and not self.stream:
            plan_lags(self, stage)
        for node in stage.nodes:
            if node.op not in ("ref", "input", "param", "lengths", "const"):
                self.out(node)
        prepare_scan_refs(self, stage)
        self.em.tag = f"scan over {safe_comment(axis.name, bare=True)}"
        with self.em.block(f"for s_ in range({n}):"):
            self.em.line(f"{k} = s_" if stage.direction > 0 else f"{k} = {n} - 1 - s_")
            self._nodes(stage.nodes, templates, render_ref)
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

    def _finish(self) -> Rendered:
        """One ``@njit(cache=True)`` function per stage (LLVM compiles small functions much faster than one
        big one) and a plain-Python entry ``run`` that calls them in order (a few calls per run, not per step)."""
        sizes = [(self.size(a), a) for a in self.axes] + [("nb", BATCH)]
        leaves = list(self.leaves)
        hist_args = [v for h in self.hist.values() for v in h[:2]]
        used = "\n".join(self.em.lines + [line for lines in self.after.values() for line in lines])
        prologue, dropped = prologue_lines(self.prologue, used)
        self.buffers = [b for b in self.buffers if b.var not in dropped]
        bufs = [b.var for b in self.buffers if not b.extra]      # a lagged pair's base is only storage
        args = [s for s, _ in sizes] + leaves + hist_args + bufs
        ftype = "np.float32" if self.dtype == "float32" else "np.float64"
        head = [
            f'"""Generated by rnnc for model {safe_comment(self.graph.name)} ({self.dtype}). Do not edit."""',
            "import math",
            "",
            "import numba",
            "import numpy as np",
            "from rnnc.backends.cpu import gemm as gk  # noqa: F401",
            "from rnnc.backends.cpu import kernels_image as imk  # noqa: F401",
            "from rnnc.backends.cpu import kernels_linalg as lak  # noqa: F401",
            "from rnnc.backends.cpu.blocks import run_blocks as _blocks  # noqa: F401",
            "",
            f"F = {ftype}",
            f"# gemm {gemm_version()}",
            "",
            "",
            "def _threads(kind):",
            '    """BLAS threads for the next stage (row blocks for a split scan); the runtime replaces this hook."""',
            "    return 1",
            "",
        ]
        if self.vector_math:
            from rnnc.backends.cpu.ops_ewise import MATH_HELPERS

            head += MATH_HELPERS[self.dtype].split("\n")
        funcs, calls = stage_functions(self.em.lines, self.spans, args, [s.kind for s in self.schedule],
                                       self.split_stages, set(self.after))
        body = []
        for k, lines in calls:
            kind = self.schedule[k - 1].kind
            for line in lines:
                if line.lstrip().startswith("_blocks("):      # row blocks of a scan, one BLAS thread each
                    body += ["    parts_ = _threads('split')  # row blocks of the batch (threads) for a split scan",
                             line]
                    continue
                if line.lstrip().startswith(("imk.", "lak.")):  # a parallel kernel: one BLAS thread per thread
                    body += ["    threads_ = _threads('kernel')  # threads of a parallel kernel or product", line]
                    continue
                body += [f"    _threads({kind!r})  # BLAS threads for a {kind} stage", line]
            body += self.after.get(k, [])
        entry = ["", "", f"def run({', '.join(args)}):"] + prologue + body + ["    return 0", ""]
        results = {n: b.var for n, b in self.bufs.items() if b.var.startswith("v") and n not in self.aliases}
        src = one_line_breaks("\n".join(head + funcs + entry))
        return Rendered(src, args, sizes, dict(self.leaves), list(self.buffers), results, dict(self.hist))


def gemm_version() -> str:
    """The name of gemm's external functions (``gemm.VERSION``), named in generated code: a module compiled
    against other names is rebuilt."""
    from rnnc.backends.cpu.gemm import VERSION

    return VERSION


def _stable(r: Renderer, stage):
    """The stage's nodes in a deterministic dependency order (ties by position in ``graph.nodes``), so the
    generated source, and with it the cache key, is the same in every process. Shifted references come
    first; then runs of one kind are kept together (elementwise code while any is ready, then products...),
    so sibling elementwise loops end up adjacent and can share a loop nest."""
    import dataclasses
    import heapq

    from rnnc.passes.fuse import FUSABLE

    members = set(stage.nodes)
    deps = {n: {i for i in n.inputs if i in members} for n in stage.nodes}
    for n in stage.nodes:
        if n.op == "ref" and not n.attr("offset") and r.graph.value_of(n) in members:
            deps[n].add(r.graph.value_of(n))
    users: dict = {n: [] for n in stage.nodes}
    for n, ds in deps.items():
        for d in ds:
            users[d].append(n)

    def kind(n) -> int:
        if n.op == "ref":
            return 0 if n.attr("offset") else 2      # a same-step reference has no code: elementwise glue
        return 2 if n.op in FUSABLE or n.op == "fused" else 1

    left = {n: len(ds) for n, ds in deps.items()}
    ready: dict = {0: [], 1: [], 2: []}
    for n, k in left.items():
        if k == 0:
            heapq.heappush(ready[kind(n)], (r.order[n], n.id, n))
    out, last = [], 1
    while any(ready.values()):
        k = 0 if ready[0] else (last if ready[last] else 3 - last)
        n = heapq.heappop(ready[k])[-1]
        last = k or last
        out.append(n)
        for u in users[n]:
            left[u] -= 1
            if left[u] == 0:
                heapq.heappush(ready[kind(u)], (r.order[u], u.id, u))
    if len(out) != len(stage.nodes):
        return stage
    return dataclasses.replace(stage, nodes=tuple(out))


def read_init(r: Renderer, ref, env, feats) -> str:
    """The element a shifted reference reads out of range: its initial value, or zero."""
    if not ref.inputs:
        return r.lit(0.0)
    init = ref.inputs[0]
    return r.read(init, env, feats, ref.shape)


__all__ = ["Renderer", "Rendered", "BufSpec", "MissingTemplate", "read_init", "align_feats", "RUN_MARK"]
