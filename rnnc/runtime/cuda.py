"""``rc.compile(m, target="cuda")``: the CPU runtime's contract on the GPU.

* inputs and params may be numpy arrays or device arrays (anything with ``__cuda_array_interface__``, or
  the simulator's arrays); host params are uploaded into device copies that live across calls, device ones
  are used in place (``f.to_device(params)`` makes them once);
* work buffers are device arrays allocated once per shape and reused;
* results are device arrays (``.copy_to_host()``) unless the model was compiled with ``results="host"``
  or a call passes ``to_host=True``; the loss is a Python float;
* ``stats`` adds ``scan_strategy`` (per scan of the last call: ``"persistent"`` (one block), ``"grid"`` (a
  cooperative multi-block launch) or ``"loop"`` (one launch per node per step); see
  :mod:`rnnc.backends.cuda.render`).
"""
from __future__ import annotations

import time

import numpy as np
from numba import cuda

from rnnc.backends.cache import load, store
from rnnc.backends.cpu.emit import BATCH
from rnnc.backends.cuda.render import CudaRenderer
from rnnc.interpret.bind import bind
from rnnc.interpret.boundary import index_plan
from rnnc.interpret.rolled import Result
from rnnc.passes import run_pipeline
from rnnc.runtime.compiled import Compiled
from rnnc.runtime.kernel import Kernel, from_meta, to_meta

SCAN_MODES = {"auto": 0, "loop": 1, "persistent": 2, "grid": 3}


def is_device_array(x) -> bool:
    """True for CUDA device arrays (``__cuda_array_interface__``) and the simulator's fake ones."""
    return hasattr(x, "__cuda_array_interface__") or cuda.devicearray.is_cuda_ndarray(x)


def _as_device(x):
    return x if cuda.devicearray.is_cuda_ndarray(x) else cuda.as_cuda_array(x)


def _placeholder(x):
    """A zero-stride host array with ``x``'s shape and dtype, for checking a device array without copying."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype=x.dtype), shape=tuple(x.shape),
                                           strides=(0,) * len(x.shape))


class CudaKernel(Kernel):
    """A :class:`Kernel` whose module is CUDA kernels and whose buffers live on the device."""

    def __init__(self, graph, dtype: str, stream: bool = False, passes=None, scan: str = "auto",
                 to_host: bool = False):
        t0 = time.perf_counter()
        if scan not in SCAN_MODES:
            raise ValueError(f"scan must be one of {sorted(SCAN_MODES)}, got {scan!r}")
        self.source_graph = graph
        self._graph = run_pipeline(graph, passes)
        self.dtype = np.dtype(dtype)
        self.rendered = CudaRenderer(self._graph, dtype, stream=stream).render()
        self.layout = from_meta(to_meta(self.rendered, self._graph), graph)
        self.sites = list(self.rendered.sites)        # rendered each time: this graph's own locations
        self.path, hit = store(self.rendered.source)
        self.module = load(self.path)
        self.stats = {"compile_s": 0.0, "cache_hit": hit, "buffer_bytes": 0, "render_s": time.perf_counter() - t0,
                      "scan_strategy": []}
        self._t0 = t0
        self._compiled = False
        self._buffers: dict = {}
        self._uploads: dict = {}
        self.scan_mode = SCAN_MODES[scan]
        self.to_host = to_host
        self.threads = None

    def bind(self, inputs, params, optional=(), sizes=None, batch=None, check_finite: bool = False):
        """Check like the CPU backend; device arrays are checked by shape and dtype, not copied — except the
        inputs whose values the boundary checks (lengths, class labels, one-hot indices: all of them with
        ``check_finite``), which are copied to the host first."""
        on_dev = {}
        host_in, host_par = {}, {}
        on_host = index_plan(self.source_graph).index_inputs
        for src, dst in ((inputs, host_in), (params, host_par)):
            for name, v in src.items():
                if is_device_array(v) and not check_finite and name not in on_host:
                    on_dev[name] = _as_device(v)
                    dst[name] = _placeholder(on_dev[name])
                else:
                    dst[name] = v.copy_to_host() if is_device_array(v) else v
        b = bind(self.source_graph, host_in, host_par, self.dtype, sizes, batch, optional, check_finite)
        for node in list(b.arrays):
            dev = on_dev.get(node.name)
            if dev is not None and node.op in ("input", "param"):
                want = np.int64 if node.dtype == "int" else self.dtype
                b.arrays[node] = dev if dev.dtype == want else cuda.to_device(dev.copy_to_host().astype(want))
        return b

    def buffers(self, sizes: dict) -> dict:
        """Device buffers for these sizes, allocated once and reused."""
        key = tuple(sorted((str(k), v) for k, v in sizes.items()))
        if key not in self._buffers:
            from rnnc.backends.cuda.kernels import empty

            out = {}
            for spec in self.layout.buffers:
                shape = tuple(sizes[d] for d in spec.dims) + tuple(spec.shape)
                out[spec.var] = empty(shape or (1,), np.int64 if spec.kind == "i" else self.dtype)
            self._buffers = {key: out}
            self.stats["buffer_bytes"] = int(sum(a.size * a.dtype.itemsize for a in out.values()))
        return self._buffers[key]

    def _device_leaf(self, var, arr):
        """``arr`` on the device: device arrays as they are; host arrays copied into a kept device copy."""
        if is_device_array(arr):
            return arr
        arr = np.ascontiguousarray(arr)
        dev = self._uploads.get(var)
        if dev is None or dev.shape != arr.shape or dev.dtype != arr.dtype:
            dev = self._uploads[var] = cuda.to_device(arr)
        else:
            dev.copy_to_device(arr)
        return dev

    def call(self, binding, extra: dict | None = None) -> dict:
        """Launch ``run``; returns the device buffer dict (read results before the next call)."""
        sizes = {**binding.sizes, BATCH: binding.batch}
        bufs = self.buffers(sizes)
        by_var = {var: self._device_leaf(var, self.leaf_array(binding, node))
                  for var, node in self.layout.leaves.items()}
        for var, v in (extra or {}).items():
            by_var[var] = self._device_leaf(var, v) if isinstance(v, np.ndarray) else v
        by_var.update(bufs)
        by_var["scan_mode_"] = self.scan_mode
        self.stats["scan_strategy"] = self.module.run(*self.arguments(sizes, by_var))
        if not self._compiled:
            cuda.synchronize()
            self._compiled = True
            self.stats["compile_s"] = time.perf_counter() - self._t0
        return bufs

    def result(self, bufs: dict, role: str, name: str | None = None, copy: bool = True):
        """A result of the last call (``role`` "outputs", "grads", "values" by ``name``, or "loss"): a fresh
        device array, or a host array when ``to_host``."""
        var = self.layout.results.get((role, name))
        if var is None:
            raise KeyError(f"{role} {name!r} has no buffer in the generated module")
        arr = bufs[var]
        if var in self.layout.scalar:
            return arr.copy_to_host().reshape(-1)[0]
        if self.to_host:
            return arr.copy_to_host()
        if not copy:
            return arr
        out = cuda.device_array(arr.shape, dtype=arr.dtype)
        out.copy_to_device(arr)
        return out


class CudaCompiled(Compiled):
    """:class:`Compiled` on the GPU: ``rc.compile(m, target="cuda", scan="auto", results="device")``.

    ``scan`` picks the scan strategy ("auto", "loop", "persistent" or "grid"; see :mod:`rnnc.backends.cuda.render`);
    ``results`` is "device" (default) or "host".
    """

    def __init__(self, model, dtype: str = "float32", passes=None, scan: str = "auto", results: str = "device",
                 **grad_options):
        if results not in ("device", "host"):
            raise ValueError(f"results must be 'device' or 'host', got {results!r}")
        if scan not in SCAN_MODES:
            raise ValueError(f"scan must be one of {sorted(SCAN_MODES)}, got {scan!r}")
        super().__init__(model, dtype, passes=passes, **grad_options)
        self.scan, self.to_host = scan, results == "host"

    def kernel(self, variant: str) -> CudaKernel:
        if variant not in self._kernels:
            self._kernels[variant] = CudaKernel(self._graph_of(variant), self.dtype, stream=variant == "step",
                                                passes=self.passes, scan=self.scan, to_host=self.to_host)
        return self._kernels[variant]

    def to_device(self, arrays: dict) -> dict:
        """``{name: device array}`` in this model's dtype, for params that stay on the GPU across calls."""
        return {k: v if is_device_array(v) else cuda.to_device(np.ascontiguousarray(v, dtype=self.dtype))
                for k, v in arrays.items()}

    def _with_host(self, variant: str, to_host: bool | None, fn):
        k = self.kernel(variant)
        old = k.to_host
        k.to_host = old if to_host is None else to_host
        try:
            return fn()
        finally:
            k.to_host = old

    def forward(self, inputs: dict, params: dict, to_host: bool | None = None, **checks) -> Result:
        """As on the CPU (``sizes``, ``batch``, ``check_finite`` in ``checks``)."""
        has_targets = self.graph.loss is not None and all(n in inputs for n in self._optional)
        return self._with_host("loss" if has_targets else "outputs", to_host,
                               lambda: Compiled.forward(self, inputs, params, **checks))

    def loss_and_grad(self, inputs: dict, params: dict, to_host: bool | None = None, **checks):
        return self._with_host("grad", to_host, lambda: Compiled.loss_and_grad(self, inputs, params, **checks))

    def step(self, inputs_t: dict, state, params: dict, **checks):
        """As on the CPU (``outputs, state``); the state and the step's outputs are host arrays."""
        inputs_t = {k: v.copy_to_host() if is_device_array(v) else v for k, v in (inputs_t or {}).items()}
        return self._with_host("step", True, lambda: Compiled.step(self, inputs_t, state, params, **checks))
