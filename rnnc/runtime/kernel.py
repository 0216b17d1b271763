"""One compiled variant of a graph: passes, rendering, the cached module, and buffers reused across calls."""
from __future__ import annotations

import time

import numpy as np

from rnnc.backends.cache import load, store
from rnnc.backends.cpu.emit import BATCH
from rnnc.backends.cpu.render import Renderer
from rnnc.interpret.bind import bind
from rnnc.ir.graph import Graph
from rnnc.passes import run_pipeline


class Kernel:
    """``graph`` after the pass pipeline, rendered to a module and compiled on first call.

    ``stats`` holds ``compile_s`` (render + import + Numba compile/load), ``cache_hit`` (the module file
    existed) and ``buffer_bytes`` (preallocated buffers for the last shapes seen).
    """

    def __init__(self, graph: Graph, dtype: str, stream: bool = False, passes=None, threads: int | None = None):
        self.threads = threads
        t0 = time.perf_counter()
        self.source_graph = graph
        self.graph = run_pipeline(graph, passes)
        self.dtype = np.dtype(dtype)
        self.rendered = Renderer(self.graph, dtype, stream=stream).render()
        self.path, hit = store(self.rendered.source)
        self.module = load(self.path)
        self.stats = {"compile_s": 0.0, "cache_hit": hit, "buffer_bytes": 0, "render_s": time.perf_counter() - t0}
        self._t0 = t0
        self._compiled = False
        self._buffers: dict = {}

    @property
    def source(self) -> str:
        return self.rendered.source

    def bind(self, inputs, params, optional=()):
        return bind(self.source_graph, inputs, params, self.dtype, optional=optional)

    def buffers(self, sizes: dict) -> dict:
        """Buffers for these sizes (``{Axis or BATCH: n}``), allocated once and reused."""
        key = tuple(sorted((str(k), v) for k, v in sizes.items()))
        if key not in self._buffers:
            out = {}
            for spec in self.rendered.buffers:
                shape = tuple(sizes[d] for d in spec.dims) + tuple(spec.shape)
                out[spec.var] = np.zeros(shape or (1,), dtype=np.int64 if spec.kind == "i" else self.dtype)
            self._buffers = {key: out}        # keep only the latest shapes
            self.stats["buffer_bytes"] = int(sum(a.nbytes for a in out.values()))
        return self._buffers[key]

    def call(self, binding, extra: dict | None = None) -> dict:
        """Run the entry point; returns the buffer dict (read results before the next call)."""
        sizes = dict(binding.sizes)
        sizes[BATCH] = binding.batch
        bufs = self.buffers(sizes)
        by_var = {}
        for var, node in self.rendered.leaves.items():
            if node not in binding.arrays:
                arr = np.zeros((1,) * (len(node.axes) + 1) + node.shape, dtype=np.int64 if node.dtype == "int"
                               else self.dtype)
            else:
                arr = binding.arrays[node]
            by_var[var] = np.ascontiguousarray(arr)
        by_var.update(extra or {})
        by_var.update(bufs)
        args = [sizes[d] for _, d in self.rendered.sizes] + [by_var[a] for a in self.rendered.args[
            len(self.rendered.sizes):]]
        with _blas_limit(self.threads if self.threads else (1 if binding.batch <= 32 else 2)):
            self._run(args)
        return bufs

    def _run(self, args) -> None:
        if not self._compiled:
            self.module.run(*args)
            self._compiled = True
            self.stats["compile_s"] = time.perf_counter() - self._t0
        else:
            self.module.run(*args)

    def result(self, bufs: dict, node, copy: bool = True):
        """The array of ``node`` (an output / gradient / loss root) from the last call."""
        var = self.rendered.results.get(node)
        if var is None:
            raise KeyError(f"{node!r} has no buffer in the generated module")
        arr = bufs[var]
        if not node.axes and not node.batched and not node.shape:
            return arr.reshape(-1)[0].copy()
        return arr.copy() if copy else arr


_CONTROLLER = None


def _blas_limit(n: int):
    """Limit BLAS threads for one call: per-step products are too small for a second thread to pay."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=n, user_api="blas")
