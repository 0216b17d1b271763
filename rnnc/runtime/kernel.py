"""One compiled variant of a graph: the cached module (or passes + rendering on a miss), and buffers reused
across calls.

The cache is looked up first, under a structural key of the *input* graph (:mod:`rnnc.runtime.graph_key`),
so a warm process skips the pass pipeline and rendering: it reads the module file, checks its SHA-256,
imports it, and Numba loads each stage's machine code from its own cache. The module carries a ``META``
literal with everything the runtime needs (argument order, buffers, which buffer holds which result), named
by leaf / output / gradient names and axis names, so nothing of the post-pass graph is needed at run time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rnnc.backends.cache import FOOTER, load, lookup, store, store_keyed
from rnnc.backends.cpu.blocks import on_numba_threads
from rnnc.backends.cpu.emit import BATCH, with_locations
from rnnc.backends.cpu.render import Renderer
from rnnc.backends.cpu.rendered import KERNEL, BufSpec
from rnnc.interpret.bind import bind
from rnnc.ir.graph import Graph
from rnnc.passes import CPU_PIPELINE, run_pipeline
from rnnc.runtime.arena import staggered
from rnnc.runtime.graph_key import Unkeyable, graph_key


@dataclass
class Layout:
    """The calling convention of a generated module, resolved against the kernel's source graph."""

    args: list          # argument names of run(), in order
    sizes: list         # (var, Axis or BATCH)
    leaves: dict        # var -> leaf node of the source graph
    buffers: list       # BufSpec
    results: dict       # ("outputs" | "grads" | "values", name) or ("loss", None) -> buffer var
    hist: dict          # value name -> (hist var, started var, depth)
    scalar: set         # result vars that hold one number
    parallel: bool      # run() calls pieces on several threads (split scans, row-blocked products, kernels)
    prange: bool        # ... image kernels on Numba's threads among them


def to_meta(rendered, graph: Graph) -> dict:
    """The JSON-like description of ``rendered`` (see :class:`Layout`), by names only."""
    def dim(d):
        return None if d == BATCH else d.name

    leaf_name = {n: ("inputs", k) for k, n in graph.inputs.items()}
    leaf_name.update({n: ("params", k) for k, n in graph.params.items()})
    results = {}
    for role in ("outputs", "grads", "values"):
        for name, node in getattr(graph, role).items():
            if node in rendered.results:
                results[f"{role}:{name}"] = rendered.results[node]
    if graph.loss is not None and graph.loss in rendered.results:
        results["loss:"] = rendered.results[graph.loss]
    return {
        "args": list(rendered.args),
        "sizes": [(v, dim(d)) for v, d in rendered.sizes],
        "leaves": {v: leaf_name[n] for v, n in rendered.leaves.items()},
        "buffers": [(b.var, [dim(d) for d in b.dims], list(b.shape), b.kind, b.extra, list(b.view))
                    for b in rendered.buffers],
        "results": results,
        "hist": {k: list(v) for k, v in rendered.hist.items()},
        "parallel": rendered.parallel,
        "prange": rendered.prange,
    }


def site_indices(sites, graph: Graph) -> list:
    """``sites`` (line number, ``file:line``) as (line number, position in ``graph.nodes`` of the first node
    written on that line). The module is cached under a structural key of ``graph`` that leaves locations out, so
    a later graph with the same key has a node at each position too, and its own ``file:line`` for it: the
    comments of :attr:`Kernel.source` follow the current model (lines shifted, another script) with no rebuild."""
    first: dict = {}
    for k, node in enumerate(graph.nodes):
        first.setdefault(node.where, k)
    return [(no, first[where]) for no, where in sites if where in first]


def from_meta(meta: dict, graph: Graph) -> Layout:
    axes = {a.name: a for a in graph.axes()}

    def dim(d):
        return BATCH if d is None else axes[d]

    buffers = [BufSpec(v, tuple(dim(d) for d in dims), tuple(shape), kind, extra, tuple(view))
               for v, dims, shape, kind, extra, view in meta["buffers"]]
    results = {}
    for key, var in meta["results"].items():
        role, _, name = key.partition(":")
        results[(role, name or None)] = var
    leaves = {v: getattr(graph, kind)[name] for v, (kind, name) in meta["leaves"].items()}
    scalar = {b.var for b in buffers if not b.dims and not b.shape}
    return Layout(list(meta["args"]), [(v, dim(d)) for v, d in meta["sizes"]], leaves, buffers, results,
                  {k: tuple(v) for k, v in meta["hist"].items()}, scalar, meta["parallel"], meta["prange"])


def _pass_names(passes) -> tuple | None:
    if passes is None:
        return None
    return tuple((name, f"{fn.__module__}.{fn.__qualname__}") for name, fn in passes)


class Kernel:
    """``graph`` compiled through the pass pipeline to a cached module; Numba compiles on first call.

    ``stats`` holds ``compile_s`` (lookup or passes + render, import, Numba compile/load, first call),
    ``cache_hit`` (the module was found under the graph's key, so passes and rendering were skipped),
    ``render_s`` (time to the imported module), ``buffer_bytes`` (buffers for the last shapes seen) and, for a
    module rendered here, ``precompile`` (``{"jobs", "workers"}``: its functions compiled on several processes
    before the first call, :mod:`rnnc.runtime.precompile`).
    """

    def __init__(self, graph: Graph, dtype: str, stream: bool = False, passes=None, threads: int | None = None):
        self.threads = threads
        t0 = time.perf_counter()
        self.source_graph = graph
        self.dtype = np.dtype(dtype)
        self._stream, self._passes, self._graph = stream, passes, None
        try:
            key = graph_key(graph, str(self.dtype), stream, _pass_names(passes), "cpu")
        except Unkeyable:
            key = None
        path, text = lookup(key) if key else (None, None)
        hit = text is not None
        if not hit:
            rendered = Renderer(self.graph, str(self.dtype), stream=stream, options=KERNEL).render()
            meta = dict(to_meta(rendered, self.graph), sites=site_indices(rendered.sites, graph))
            source = rendered.source + f"\n\nMETA = {meta!r}\n"
            if _boundscheck():          # its own file, so Numba's cache never mixes checked and unchecked builds
                source += "# built with NUMBA_BOUNDSCHECK=1\n"
            path = store_keyed(key, source) if key else store(source)[0]
        self.path = path
        self.module = load(path)
        self.layout = from_meta(self.module.META, graph)
        self.sites = [(no, graph.nodes[k].where) for no, k in self.module.META.get("sites", ())]
        self.stats = {"compile_s": 0.0, "cache_hit": hit, "buffer_bytes": 0, "render_s": time.perf_counter() - t0}
        self._t0 = t0
        self._compiled = False
        self._parallel = self.layout.parallel     # does run() call parallel pieces (see blas_threads)
        self._prange = self.layout.prange         # ... image kernels on Numba's threads among them
        self._buffers: dict = {}

    @property
    def graph(self) -> Graph:
        """The graph after the pass pipeline (computed on demand: a cache hit does not need it)."""
        if self._graph is None:
            self._graph = run_pipeline(self.source_graph, self._passes if self._passes is not None else CPU_PIPELINE)
        return self._graph

    @property
    def source(self) -> str:
        """The generated module (without the cache footer), each node's comment line followed by the user's
        ``file:line`` and source line of this kernel's graph (:func:`rnnc.backends.cpu.emit.with_locations`)."""
        body = self.path.read_text().rpartition(FOOTER)[0]
        return with_locations(body.rpartition("# built with ")[0].rstrip("\n") + "\n", self.sites)

    def bind(self, inputs, params, optional=(), sizes=None, batch=None, check_finite: bool = False):
        """The checked binding of a call (:func:`rnnc.interpret.bind.bind`: the interpreter's checks)."""
        return bind(self.source_graph, inputs, params, self.dtype, sizes, batch, optional, check_finite)

    def buffers(self, sizes: dict) -> dict:
        """Buffers for these sizes (``{Axis or BATCH: n}``), allocated once and reused (zeroed views of one block,
        starts spread over a page: see :mod:`rnnc.runtime.arena`)."""
        key = frozenset(sizes.items())
        if key not in self._buffers:
            own = [spec for spec in self.layout.buffers if not spec.view]
            specs = []
            for spec in own:
                lead = tuple(sizes[d] for d in spec.dims)
                if spec.extra:
                    lead = (lead[0] + spec.extra,) + lead[1:]
                specs.append((lead + tuple(spec.shape) or (1,), np.dtype(np.int64 if spec.kind == "i" else self.dtype)))
            out = dict(zip((spec.var for spec in own), staggered(specs)))
            for spec in self.layout.buffers:
                if spec.view:               # a value or its lagged reference: steps [start, start + n) of a base
                    base, start = spec.view
                    out[spec.var] = out[base][start:start + sizes[spec.dims[0]]]
            self._buffers = {key: out}        # keep only the latest shapes
            self.stats["buffer_bytes"] = int(sum(out[spec.var].nbytes for spec in own))
        return self._buffers[key]

    def leaf_array(self, binding, node):
        """The array bound to a leaf, or a size-1 placeholder for an input this call does not need."""
        if node in binding.arrays:
            return binding.arrays[node]
        return np.zeros((1,) * (len(node.axes) + 1) + node.shape,
                        dtype=np.int64 if node.dtype == "int" else self.dtype)

    def arguments(self, sizes: dict, by_var: dict) -> list:
        """``run()``'s positional arguments: axis / batch sizes, then arrays by variable name."""
        n = len(self.layout.sizes)
        return [sizes[d] for _, d in self.layout.sizes] + [by_var[a] for a in self.layout.args[n:]]

    def call(self, binding, extra: dict | None = None) -> dict:
        """Run the entry point; returns the buffer dict (read results before the next call)."""
        sizes = {**binding.sizes, BATCH: binding.batch}
        bufs = self.buffers(sizes)
        by_var = {var: np.ascontiguousarray(self.leaf_array(binding, node))
                  for var, node in self.layout.leaves.items()}
        by_var.update(extra or {})
        by_var.update(bufs)
        args = self.arguments(sizes, by_var)
        if not self._compiled and not self.stats["cache_hit"] and "precompile" not in self.stats:
            # a module rendered here: its functions compiled on several cores before the first call
            from rnnc.runtime.precompile import precompile

            self.stats["precompile"] = precompile(self.module, self.path, args)
        want = self.blas_threads(binding.batch)
        with _StageThreads(scan=want["scan"], whole=want["map"], parts=want["split"], rows=want["blocks"]) as threads, \
                on_numba_threads(self._prange):        # row blocks on the image kernels' pool (blocks.py)
            self.module._threads = threads
            saved = _numba_threads(want["numba"]) if self._prange else None     # the image kernels' prange
            ready = self._ready_hook(bufs)
            if ready is not None:
                self.module._ready = ready
            try:
                self._run(args)
            finally:
                self.module._threads = _keep_threads     # a later run() outside call() leaves BLAS alone
                if ready is not None:
                    self.module._ready = _no_listener
                if saved is not None:
                    _numba_threads(saved)
        return bufs

    def _ready_hook(self, bufs: dict):
        """The generated ``_ready(*buffers)`` hook for this call: inside
        :func:`rnnc.ops.collective.across_ranks` with a ``ready`` listener, it hands the listener the complete
        gradients ``{param name: buffer}`` as ``run`` announces them; otherwise None (the module's own hook, which
        does nothing, stays)."""
        from rnnc.ops.collective import ready_listener

        listener = ready_listener()
        if listener is None or not hasattr(self.module, "_ready"):
            return None
        names: dict = {}
        for (role, name), var in self.layout.results.items():
            if role == "grads":
                names.setdefault(var, []).append(name)

        def ready(*variables):
            listener({name: bufs[v] for v in variables for name in names.get(v, ())})
        return ready

    def blas_threads(self, batch: int) -> dict:
        """Threads per kind of stage for a call with this batch.

        A module with parallel pieces (split scans and row-blocked products on rnnc's threads, image kernels
        on Numba's) runs them on ``threads=`` threads when given, else on as many as Numba would use
        (``NUMBA_NUM_THREADS``, default the CPU count), with OpenBLAS on one thread everywhere: OpenBLAS's
        threads keep spinning after a call and fight the others for the cores (the flagship's step ran 3.4x
        slower with 2 BLAS threads; an LSTM's split scans gained nothing). ``"split"`` is the number of row
        blocks of a split scan, each at least :data:`SPLIT_MIN_ROWS` rows, ``"blocks"`` the most row blocks of
        a row-blocked product (:func:`rnnc.backends.cpu.kernels_linalg.blocks`); one per thread. In a module
        with image kernels both are :data:`IMAGE_ROW_PARTS` whatever the thread count, run on Numba's threads
        (:class:`rnnc.backends.cpu.blocks.on_numba_threads`): a block's products are cut into panels by its
        row count and a product's outer sums are added block by block, so a split that followed the thread
        count would change the rounding with it; the image kernels' results do not depend on the thread count,
        and neither do these. A module without them uses BLAS threads: ``threads=`` when given, else 2 for
        map stages and for a scan's per-step products on batches over 32, 1 otherwise."""
        most = numba_threads()
        numba_n = min(self.threads or most, most)
        fixed = IMAGE_ROW_PARTS if self._prange else numba_n
        parts = max(1, min(fixed, batch // SPLIT_MIN_ROWS))
        rows = fixed
        if self._parallel:
            return {"map": 1, "scan": 1, "kernel": 1, "split": parts, "blocks": rows, "numba": numba_n}
        if self.threads:
            return {"map": self.threads, "scan": self.threads, "kernel": 1, "split": parts, "blocks": rows,
                    "numba": numba_n}
        return {"map": 2, "scan": 1 if batch <= 32 else 2, "kernel": 1, "split": parts, "blocks": rows,
                "numba": numba_n}

    def _run(self, args) -> None:
        global _BLAS
        self.module.run(*args)
        if not self._compiled:
            self._compiled = True
            self.stats["compile_s"] = time.perf_counter() - self._t0
            _BLAS = None         # the first call may have loaded another BLAS (scipy's, for np.dot): rescan

    def has(self, role: str, name: str | None = None) -> bool:
        return (role, name) in self.layout.results

    def result(self, bufs: dict, role: str, name: str | None = None, copy: bool = True):
        """The array of a result from the last call: ``role`` "outputs", "grads", "values" (by ``name``)
        or "loss"."""
        var = self.layout.results.get((role, name))
        if var is None:
            raise KeyError(f"{role} {name!r} has no buffer in the generated module")
        arr = bufs[var]
        if var in self.layout.scalar:
            return arr.reshape(-1)[0].copy()
        return arr.copy() if copy else arr

    def names(self, role: str) -> list:
        return [n for r, n in self.layout.results if r == role]


def _boundscheck() -> bool:
    import numba

    return bool(numba.config.BOUNDSCHECK)


_BLAS = None
#: fewest batch rows in one block of a split scan (smaller blocks leave OpenBLAS too little work per call)
SPLIT_MIN_ROWS = 4
#: row blocks of split scans and row-blocked products in a module with image kernels, whatever the thread
#: count (so the results do not depend on it), run on Numba's threads. 1 (one core for them): with 2, the
#: flagship's step on the 2-core machine was level to 6% faster when it was quiet and 1.7-3x slower when it was
#: busy (docs/benchmarks.md, "SpatialRNN sweeps on Numba's threads")
IMAGE_ROW_PARTS = 1


def numba_threads() -> int:
    """The most threads parallel pieces use here: ``NUMBA_NUM_THREADS`` (default the CPU count). Read from
    Numba's configuration, which does not start its thread pool (a module without image kernels never does)."""
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def _numba_threads(n: int) -> int:
    """Set the threads of Numba's parallel regions to ``n``; returns the previous count."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(n)
    return before


def _no_listener(*buffers) -> None:
    """The generated module's ``_ready`` hook outside a data-parallel step: nobody to tell."""


def _keep_threads(kind: str) -> int:
    """The generated module's ``_threads`` hook outside :meth:`Kernel.call`: no change (one row block)."""
    return 1


def _blas_libs() -> list:
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        from rnnc.backends.cpu.gemm import load_numba_blas

        load_numba_blas()      # before the scan, so that its threads are limited from the first call
        _BLAS = ThreadpoolController().select(user_api="blas").lib_controllers
    return _BLAS


class _StageThreads:
    """Threads per stage, set by the generated ``run`` before each stage (``_threads("scan")``): BLAS threads
    for a stage's own products (a scan's per-step products on a small batch are too small for a second thread
    to pay, the map stages' products over all steps are not); one BLAS thread under a parallel kernel
    (``"kernel"``: the call returns the row blocks of a product, image kernels use Numba's thread count) or a
    split scan (``"split"``: the call returns its number of row blocks). Restores the counts on exit."""

    def __init__(self, scan: int, whole: int, parts: int = 1, rows: int = 1):
        self.want = {"scan": scan, "map": whole, "kernel": 1, "split": 1}
        self.give = {"split": parts, "kernel": rows}
        self.now = None

    def __enter__(self):
        self.saved = [(lib, lib.num_threads) for lib in _blas_libs()]
        return self

    def __call__(self, kind: str) -> int:
        n = self.want[kind]
        if n != self.now:
            for lib, _ in self.saved:
                lib.set_num_threads(n)
            self.now = n
        return self.give.get(kind, n)

    def __exit__(self, *exc):
        for lib, n in self.saved:
            lib.set_num_threads(n)
