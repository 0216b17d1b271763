"""Rendering a scheduled graph into one module of ``@cuda.jit`` kernels and a host function that launches them.

:class:`CudaRenderer` is the CPU :class:`~rnnc.backends.cpu.render.Renderer` with a different emitter
(:class:`~rnnc.backends.cuda.emit.CudaEmitter`: outermost loop nests become kernels), a different template
table (:mod:`rnnc.backends.cuda.ops`) and a different module head. Stages, buffers, references and the op
templates' index arithmetic are the CPU backend's. The host function ``run(sizes..., leaves..., buffers...,
scan_mode_)`` is plain Python::

    map stage:   one kernel launch per node (one thread per element; products: one tiled GEMM over all rows)
    scan stage:  if persistent:  ONE launch of ONE block; the kernel loops over the steps itself, its threads
                                 stride over each node's elements, a barrier between nodes; axis-free matrices
                                 the step reads are copied to shared memory once, before the loop (when they
                                 fit :data:`SHARED_BYTES`)
                 elif grid:      ONE cooperative launch of many blocks (as many as the widest node of a step
                                 needs, capped at what stays resident); grid-stride loops, ``grid.sync()``
                                 between nodes; matrices too big for shared memory are read from global / L2
                 else:           for s in range(n): one launch per node (GEMM per step for products)

``scan_mode_`` is 0 (auto), 1 (always the host loop), 2 (always one-block persistent) or 3 (always grid).
Auto picks persistent when the per-step product work ``nb × Σ M·N`` is at most :data:`PERSISTENT_MACS`, else
grid when the batch is at most :data:`GRID_MAX_BATCH` (small batches: per-step launches would dominate; the
batch 4, H = 1024 case), else the loop (large batches: the per-step tiled GEMM keeps the GPU busy). These
thresholds are first guesses, not yet measured on a GPU. ``run`` returns the list of
strategies it used, one per scan, which the runtime reports in ``stats``.
"""
from __future__ import annotations

import numpy as np
from numba import config

from rnnc.backends.cpu.emit import BATCH, Buf, join_lines, one_line_breaks
from rnnc.backends.cpu.render import BufSpec, MissingTemplate, Rendered, Renderer
from rnnc.backends.cuda.emit import CudaEmitter
from rnnc.ir.names import safe_comment

PERSISTENT_MACS = 1 << 20          # per-step multiply-adds one block handles faster than a launch sequence
PERSISTENT_THREADS = 16 if config.ENABLE_CUDASIM else 256   # 256 × 255 registers fit any SM
SHARED_BYTES = 48 * 1024           # static shared memory per block
GRID_THREADS = 16 if config.ENABLE_CUDASIM else 256          # threads per block of a cooperative-grid scan
GRID_MAX_BATCH = 64                # auto: past one block's work, a grid-synchronised scan up to this batch


class CudaRenderer(Renderer):
    """A :class:`Renderer` whose output is CUDA kernels plus a launching host function."""

    def __init__(self, graph, dtype: str, sched=None, stream: bool = False):
        super().__init__(graph, dtype, sched, stream)
        self.em = CudaEmitter()
        self.shared: dict = {}           # node -> Buf of its shared-memory copy (inside a persistent kernel)
        self._kern = None
        self._mats: dict = {}            # matrix -> None (transposed shared copy) or Buf (transposed global copy)
        self._gt: dict = {}              # matrix -> Buf of its global transposed copy
        self._stage_nodes: set = set()

    # ------------------------------------------------------------------ templates
    def _node(self, node, templates, render_ref):
        from rnnc.backends.cuda.ops import TEMPLATES

        if node.op in ("input", "param", "lengths", "const"):
            return
        self.tag_node(node)
        if node.op == "ref":
            self._ref(node)
            return
        fn = TEMPLATES.get(node.op)
        if fn is None:
            raise MissingTemplate(f"op {node.op!r} has no CUDA template (node {node.label()} at {node.where}); "
                                  f"add one to rnnc/backends/cuda/ops.py or compile with target='cpu'")
        fn(self, node)

    def _ref(self, ref) -> None:
        """As :func:`rnnc.backends.cpu.refs.render_ref`, but safe to render a scan's body twice (both
        strategies): a step view is recognised by its prepared fill buffer, not by having a buffer."""
        from rnnc.backends.cpu import refs

        if not ref.attr("offset"):
            self.bufs[ref] = self.buf(self.graph.value_of(ref))
        elif ref in self.ref_fill:
            refs._step_view(self, ref)
        else:
            refs.shift_copy(self, ref, self.out(ref))

    def _plan_matrices(self, stage) -> None:
        """Before a persistent kernel: each axis-free matrix ``A (M, K)`` that a product of the step reads gets
        a transposed copy ``A^T (K, M)``, so neighbouring threads (neighbouring output rows ``m``) read
        neighbouring addresses (coalesced global loads, no shared-memory bank conflicts). In stage order,
        while the block's :data:`SHARED_BYTES` last, the copy is in shared memory (loaded by the kernel, see
        :meth:`matrix_t`); past that, in global memory (one map kernel, emitted here)."""
        self._mats, used = {}, 0
        for nd in stage.nodes:
            a = nd.inputs[0] if nd.op == "matmul" else None
            if a is None or a in self._mats or not self._constant_matrix(a):
                continue
            nbytes = int(np.prod(a.shape)) * np.dtype(self.dtype).itemsize
            if used + nbytes <= SHARED_BYTES:
                used += nbytes
                self._mats[a] = None
            else:
                self._mats[a] = self._global_t(a)

    def _constant_matrix(self, a) -> bool:
        b = self.bufs.get(a)
        return (b is not None and b.literal is None and not b.dims and not b.offset and len(a.shape) == 2
                and a not in self._stage_nodes)

    def _global_t(self, a) -> Buf:
        """``A^T`` in a global scratch buffer (allocated once, filled before each persistent launch)."""
        m, k = a.shape
        tb = self._gt.get(a)
        if tb is None:
            tb = self._gt[a] = Buf(self.name(a, "tr"), (), (k, m))
            self.buffers.append(BufSpec(tb.var, (), (k, m)))
        src = self.buf(a)
        with self.em.loops([("f0", str(m)), ("f1", str(k))]):
            self.em.line(f"{tb.at({}, ['f1', 'f0'])} = {src.at({}, ['f0', 'f1'])}")
        return tb

    def matrix_t(self, node) -> Buf | None:
        """Inside a persistent kernel: the transposed copy ``A^T`` planned by :meth:`_plan_matrices` (a
        shared-memory one is declared and loaded at the kernel's start, once), or None (read ``A`` itself)."""
        if self._kern is None or node not in self._mats:
            return None
        if self._mats[node] is not None:
            return self._mats[node]
        if node not in self.shared:
            m, k = node.shape
            sb = self.shared[node] = Buf(f"sh{len(self.shared)}", (), (k, m))
            self._kern.shared += [
                f"    {sb.var} = cuda.shared.array(({k}, {m}), F)",
                f"    for t_ in range(cuda.threadIdx.x, {m * k}, cuda.blockDim.x):",
                f"        {sb.var}[t_ % {k}, t_ // {k}] = {self.buf(node).var}[t_ // {k}, t_ % {k}]",
                "    cuda.syncthreads()",
            ]
        return self.shared[node]

    # ------------------------------------------------------------------ scans
    def _scan(self, stage, templates, render_ref):
        from rnnc.backends.cpu.refs import prepare_scan_refs

        axis = stage.axis
        k, n = self.var(axis), self.size(axis)
        self.em.tag = f"scan over {safe_comment(axis.name, bare=True)}"
        self.fixed = {axis: k}
        for node in stage.nodes:
            if node.op not in ("ref", "input", "param", "lengths", "const"):
                self.out(node)
        prepare_scan_refs(self, stage)
        self._stage_nodes = set(stage.nodes)
        macs = sum(int(np.prod(nd.inputs[0].shape)) for nd in stage.nodes if nd.op == "matmul") or 1
        self.em.tag = f"scan over {safe_comment(axis.name, bare=True)}"
        with self.em.block(f"if scan_mode_ == 2 or (scan_mode_ == 0 and nb * {macs} <= {PERSISTENT_MACS}):"):
            self._persistent_scan(stage, k, n, templates, render_ref, grid=False)
        self.em.tag = f"scan over {safe_comment(axis.name, bare=True)}"
        with self.em.block(f"elif scan_mode_ == 3 or (scan_mode_ == 0 and nb <= {GRID_MAX_BATCH}):"):
            self._persistent_scan(stage, k, n, templates, render_ref, grid=True)
        self.em.tag = f"scan over {safe_comment(axis.name, bare=True)}"
        with self.em.block("else:"):
            self.em.line("picked_.append('loop')")
            with self.em.block(f"for s_ in range({n}):"):
                self._step_body(stage, k, n, templates, render_ref)
        self.fixed = {}

    def _persistent_scan(self, stage, k, n, templates, render_ref, grid: bool) -> None:
        """The whole scan as ONE launch: one block (``persistent``) or a cooperative grid (``grid``) whose
        blocks stride over each node's elements and meet at ``grid.sync()`` between nodes."""
        self.em.line(f"picked_.append('{'grid' if grid else 'persistent'}')")
        self.shared = {}
        self._plan_matrices(stage)
        threads = GRID_THREADS if grid else PERSISTENT_THREADS
        with self.em.persistent(threads, grid=grid, want=self._grid_want(stage, threads)) as kern:
            self._kern = kern
            with self.em.block(f"for s_ in range({n}):"):
                self._step_body(stage, k, n, templates, render_ref)
            self._kern = None

    def _grid_want(self, stage, threads: int) -> str:
        """Blocks that give every element of the widest node of one step its own thread (an expression)."""
        widths = []
        for node in stage.nodes:
            if node.op in ("ref", "input", "param", "lengths", "const"):
                continue
            sizes = [self.size(d) for d in self.space(node)] + [str(int(np.prod(node.shape)))]
            widths.append(" * ".join(sizes))
        widths = list(dict.fromkeys(widths))
        most = f"max({', '.join(widths)})" if len(widths) > 1 else (widths[0] if widths else "1")
        return f"({most} + {threads - 1}) // {threads}"

    def _step_body(self, stage, k, n, templates, render_ref) -> None:
        self.em.line(f"{k} = s_" if stage.direction > 0 else f"{k} = {n} - 1 - s_")
        for node in stage.nodes:
            self._node(node, templates, render_ref)

    # ------------------------------------------------------------------ the module
    def _finish(self) -> Rendered:
        sizes = [(self.size(a), a) for a in self.axes] + [("nb", BATCH)]
        hist_args = [v for h in self.hist.values() for v in h[:2]]
        args = [s for s, _ in sizes] + list(self.leaves) + hist_args + [b.var for b in self.buffers] + ["scan_mode_"]
        ftype = "np.float32" if self.dtype == "float32" else "np.float64"
        head = [
            f'"""Generated by rnnc for model {safe_comment(self.graph.name)} ({self.dtype}, CUDA). Do not edit."""',
            "import math",
            "",
            "import numpy as np",
            "from numba import cuda",
            "",
            "import rnnc.backends.cuda.kernels as lib",
            "",
            f"F = {ftype}",
        ]
        kernels = []
        for lines in self.em.kernels:
            kernels += ["", ""] + lines
        run = ["", "", f"def run({', '.join(args)}):", "    picked_ = []"] + self.em.lines + ["    return picked_", ""]
        results = {nd: self.bufs[nd].var for nd in self.bufs if self.bufs[nd].var.startswith("v")}
        src, sites = join_lines(head + kernels + run)
        return Rendered(one_line_breaks(src), args, sizes, dict(self.leaves), list(self.buffers), results,
                        dict(self.hist), sites=sites)


__all__ = ["CudaRenderer", "PERSISTENT_MACS"]
