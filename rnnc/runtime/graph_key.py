"""A cheap structural key of a graph, so a cached kernel is found *before* the passes and rendering run.

The key is a SHA-256 over a canonical text of the graph (every node's op, attrs, shape, dtype, axes, batch
flag, inputs by position and name; the named leaves and roots), the kernel options (dtype,
stream, passes) and the versions that shape generated code: rnnc, Numba (and whether ``NUMBA_BOUNDSCHECK`` is
on), numpy and a digest of the rnnc source files that compile a graph (ops, ir, schedule, passes, CPU backend,
runtime). Any change to those files gives new keys, so a stale module is never reused. Walking the graph is
linear and takes milliseconds; the rendered module keeps its own content hash (the cache's integrity check).
Source locations are left out
(of the key and of the generated code): the same model built by a training script, a benchmark and the command
line is one computation, compiled once — nodes that autodiff and the passes create carry the location of
whatever called them, which would otherwise make every calling script a new kernel.
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np

from rnnc.ir.graph import Graph
from rnnc.ir.names import check_graph_names
from rnnc.ir.node import Axis, AxisShift, Node
from rnnc.version import ROOT, __version__

_CODE_DIRS = ("ops", "ir", "schedule", "passes", "backends/cpu", "runtime", "autodiff")


class Unkeyable(Exception):
    """An attribute with no stable text (the kernel is then keyed by its rendered source instead)."""


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the rnnc sources that decide what a graph compiles to, plus library versions."""
    import numba

    root = ROOT
    h = hashlib.sha256(f"rnnc {__version__} numba {numba.__version__} numpy {np.__version__}".encode())
    if numba.config.BOUNDSCHECK:            # NUMBA_BOUNDSCHECK=1 builds are kept apart from normal ones
        h.update(b"boundscheck")
    for sub in _CODE_DIRS:
        for path in sorted((root / sub).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    h.update((root / "backends" / "cache.py").read_bytes())
    return h.hexdigest()


def _canon(value, index: dict, axes: dict) -> str:
    """Stable text of an attribute value (nodes by position, axes by position and name)."""
    stack, out = [value], []
    while stack:
        v = stack.pop()
        if isinstance(v, Node) and v in index:
            out.append(f"N{index[v]}")
        elif isinstance(v, Node):       # a named leaf the graph no longer reads (pruned variants)
            out.append(f"L({v.op} {v.name} {tuple(v.shape)} {v.dtype} {[a.name for a in v.axes]} {v.batched})")
        elif isinstance(v, Axis):
            out.append(f"A{axes.get(v, v.name)}:{v.name}")
        elif isinstance(v, AxisShift):
            out.append(f"S{v!r}")
        elif isinstance(v, (tuple, list)):
            out.append(f"({len(v)}")
            stack.append(")")
            stack.extend(reversed(v))
        elif isinstance(v, dict):
            out.append(f"{{{len(v)}")
            stack.append("}")
            for k in reversed(sorted(v, key=str)):
                stack.extend([v[k], k])
        elif isinstance(v, Graph):       # a gradient graph's forward graph (meta["forward"]): by structure,
            out.append(f"G{graph_key(v)}")     # not by repr, whose node names count every node ever made
        elif isinstance(v, np.ndarray):
            out.append(f"arr{v.dtype}{v.shape}{hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()}")
        elif v is None or isinstance(v, (bool, int, float, str, np.generic)):
            out.append(repr(v))
        else:
            text = repr(v)
            if " at 0x" in text:
                raise Unkeyable(f"no stable key for attribute value {text}")
            out.append(text)
    return " ".join(out)


def graph_key(graph, *options) -> str:
    """Hex key of ``graph`` and ``options`` (see the module docstring); raises :class:`Unkeyable`. A name that
    breaks the rule of names (changed or forged after declaration) is refused here too, before a cached module
    is looked up: ``ValueError`` (:func:`rnnc.ir.names.check_graph_names`)."""
    check_graph_names(graph)
    index = {n: k for k, n in enumerate(graph.nodes)}
    axes = {a: k for k, a in enumerate(graph.axes())}
    h = hashlib.sha256(code_digest().encode())
    h.update(repr((graph.name, options)).encode())
    for n in graph.nodes:
        row = (n.op, _canon(dict(n.attrs), index, axes), tuple(n.shape), n.dtype,
               tuple(axes[a] for a in n.axes), bool(n.batched), tuple(index[i] for i in n.inputs), n.name)
        h.update(repr(row).encode())
    named = {k: getattr(graph, k) for k in ("inputs", "params", "values", "outputs", "grads", "inits")}
    h.update(_canon(named, index, axes).encode())
    h.update(_canon([graph.loss, graph.signals, graph.lengths, graph.meta], index, axes).encode())
    return h.hexdigest()[:32]
