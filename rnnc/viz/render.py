"""``rc.render`` and ``to_dot``: draw a model, an IR graph or an unrolled graph with Graphviz."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import graphviz
import networkx as nx

from rnnc.ir.graph import Graph

FORMATS = ("svg", "png", "pdf", "dot", "gv")
INSTALL_HINT = ("rendering needs Graphviz's `dot` program, which is not on PATH; install it with "
                "`sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
                "`conda install graphviz`, or write a .dot file instead")


def _build(obj, **options) -> tuple[graphviz.Digraph, int]:
    from rnnc.viz.folded import folded_dot
    from rnnc.viz.unrolled import unrolled_dot

    if isinstance(obj, nx.DiGraph):
        if not isinstance(obj.graph.get("graph"), Graph):
            raise TypeError("to_dot/render: a networkx graph must come from m.unroll(...) (its .graph['graph'] "
                            f"is the IR Graph), got a DiGraph with graph attributes {sorted(obj.graph)}")
        return unrolled_dot(obj, **options)
    graph = obj if isinstance(obj, Graph) else getattr(obj, "graph", None)
    if not isinstance(graph, Graph):
        raise TypeError(f"to_dot/render: expected an rnnc Model, an rnnc.ir.Graph or an unrolled graph from "
                        f"m.unroll(...), got {type(obj).__name__}")
    return folded_dot(graph, **options)


def to_dot(obj, **options) -> graphviz.Digraph:
    """The Graphviz drawing of ``obj`` (a Model, an IR Graph, or ``m.unroll(t=...)``).

    Options: ``detail`` (False: named values only, edges labelled by the params met and the delay;
    True: every IR node), ``params`` (draw params as nodes; default False, True with ``detail``),
    ``rankdir`` ("BT": inputs at the bottom as in the lecture; "LR" also reads well), ``title``.
    """
    return _build(obj, **options)[0]


def render(obj, path, max_nodes: int = 20000, **options) -> Path:
    """Draw ``obj`` into ``path``; the format follows the suffix (.svg, .png, .pdf, .dot).

    The file is written atomically (a temporary file in the same folder, then ``os.replace``). Drawings
    with more than ``max_nodes`` nodes are refused for rendered formats (``dot`` takes minutes on them);
    a .dot file is always written. Other options as for :func:`to_dot`.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"render: cannot tell the format of {str(path)!r} from its suffix "
                         f"{path.suffix or '(none)'!r}; use one of {', '.join('.' + f for f in FORMATS)}")
    dot, count = _build(obj, **options)
    if fmt in ("dot", "gv"):
        data = dot.source.encode()
    else:
        if count > max_nodes:
            raise ValueError(f"render: the drawing of {dot.name!r} has {count} nodes, more than "
                             f"max_nodes={max_nodes}; pass a larger max_nodes, or render a .dot file")
        data = _pipe_with_fallbacks(obj, dot, fmt, options)
    _write_atomic(path, data)
    return path


def _pipe_with_fallbacks(obj, dot: graphviz.Digraph, fmt: str, options: dict) -> bytes:
    """Graphviz 2.4x sometimes fails on clustered drawings ("trouble in init_rank"); unrolled drawings are
    retried without layout hints, then with delayed edges ranked like the others."""
    fallbacks = [{"hints": False}, {"hints": False, "loose_delays": False}]
    if not isinstance(obj, nx.DiGraph) or any(k in options for k in ("hints", "loose_delays")):
        fallbacks = []
    try:
        return _pipe(dot, fmt)
    except RuntimeError as first:
        for change in fallbacks:
            try:
                return _pipe(_build(obj, **{**options, **change})[0], fmt)
            except RuntimeError:
                continue
        raise first


def _pipe(dot: graphviz.Digraph, fmt: str) -> bytes:
    if shutil.which("dot") is None:
        raise RuntimeError(INSTALL_HINT)
    try:
        return dot.pipe(format=fmt, quiet=True)
    except graphviz.ExecutableNotFound as e:
        raise RuntimeError(INSTALL_HINT) from e
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else str(e.stderr)
        raise RuntimeError(f"Graphviz `dot` failed to draw {dot.name!r} as {fmt}: {err[:500]}") from e


def _write_atomic(path: Path, data: bytes) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; a drawing is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
