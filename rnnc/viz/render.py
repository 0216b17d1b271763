"""``rc.render`` and ``to_dot``: draw a model, an IR graph or an unrolled graph with Graphviz."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx

from rnnc.ir.graph import Graph

if TYPE_CHECKING:
    import graphviz

FORMATS = ("svg", "png", "pdf", "dot", "gv", "json")
INSTALL_HINT = ("rendering needs Graphviz's `dot` program, which is not on PATH; install it with "
                "`sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
                "`conda install graphviz`, or write a .dot file instead")


def to_dot(obj, *, detail: bool | str = False, params: bool | None = None, title: bool = True,
           rankdir: str = "BT", max_steps: int | None = 8) -> graphviz.Digraph:
    """The Graphviz drawing of ``obj``: a Model, a gradient model (``rc.grad``), an IR Graph, or an unrolled
    graph (``m.unroll(t=4)``).

    Parameters
    ----------
    obj : Model, GradModel, Graph or the networkx graph of ``unroll``
        Folded objects are drawn with their delays as back arcs; unrolled graphs one column per step.
    detail : bool or {"values", "cells", "ops"}
        ``False``/``"values"``: named values (and values written inline that have their own weights), edges
        labelled by the params met and the delay; ``"cells"`` (folded only): each recurrent cell (a group
        of signals read through one another's delays, such as an LSTM's ``h`` and ``C``) as one box, with
        its adjoints as one box in a gradient model; ``True``/``"ops"``: every IR node.
    params : bool, optional
        Draw params as nodes (default: only with ``detail=True``).
    title : bool
        A title line (the model's name, and the sizes of an unrolled graph).
    rankdir : str
        Folded drawings: ``"BT"`` (inputs at the bottom, as in the lecture) or ``"LR"``.
    max_steps : int or None
        Unrolled drawings: an axis longer than this is drawn as its first steps, an ellipsis and its last
        step (None: every step).
    """
    return _build(obj, detail, params, title, rankdir, max_steps)[0]


def render(obj, path, *, detail: bool | str = False, params: bool | None = None, title: bool = True,
           rankdir: str = "BT", max_steps: int | None = 8, max_nodes: int = 20000) -> Path:
    """Draw ``obj`` into ``path``; the format follows the suffix (.svg, .png, .pdf, .json, .dot).

    ``rc.render(m, "elman.svg")`` draws the folded model (``x -U-> h -V-> o`` with the recurrence as a back
    arc ``W, t-1``); ``rc.render(m.unroll(t=4), "elman_unrolled.svg")`` the unrolled one: steps left to
    right, ``h[-1]`` left of step 0, inputs at the bottom and the per-step losses ``L[t]`` at the top;
    ``rc.render(rc.grad(m), "bptt.svg")`` the gradient model (``δh``, ``∂L/∂W``). Options as for
    :func:`to_dot`.

    The file is written atomically (a temporary file in the same folder, then ``os.replace``). Drawings
    with more than ``max_nodes`` nodes are refused for rendered formats (Graphviz takes minutes on them);
    a .dot file is always written. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"render: cannot tell the format of {str(path)!r} from its suffix "
                         f"{path.suffix or '(none)'!r}; use one of {', '.join('.' + f for f in FORMATS)}")
    dot, count = _build(obj, detail, params, title, rankdir, max_steps)
    if fmt in ("dot", "gv"):
        data = dot.source.encode()
    else:
        if count > max_nodes:
            raise ValueError(f"render: the drawing of {dot.name!r} has {count} nodes, more than "
                             f"max_nodes={max_nodes}; pass a larger max_nodes, or render a .dot file")
        data = pipe(dot, fmt)
    _write_atomic(path, data)
    return path


def svg(obj, **options) -> str:
    """The SVG text of :func:`to_dot`'s drawing (Jupyter's ``_repr_svg_``)."""
    return pipe(to_dot(obj, **options), "svg").decode()


def _build(obj, detail, params, title, rankdir, max_steps) -> tuple[graphviz.Digraph, int]:
    from rnnc.viz.folded import folded_dot
    from rnnc.viz.unrolled import unrolled_dot

    level = _detail_level(detail)
    if isinstance(obj, nx.DiGraph):
        if not isinstance(obj.graph.get("graph"), Graph):
            raise TypeError("to_dot/render: a networkx graph must come from m.unroll(...) (its .graph['graph'] "
                            f"is the IR Graph), got a DiGraph with graph attributes {sorted(obj.graph)}")
        if level == "cells":
            raise ValueError("detail='cells' draws folded models; an unrolled graph takes detail=False or True")
        return unrolled_dot(obj, detail=level == "ops", params=params, title=title, max_steps=max_steps)
    graph = obj if isinstance(obj, Graph) else getattr(obj, "graph", None)
    if not isinstance(graph, Graph):
        raise TypeError(f"to_dot/render: expected an rnnc Model, an rnnc.ir.Graph or an unrolled graph from "
                        f"m.unroll(...), got {type(obj).__name__}")
    return folded_dot(graph, detail=level, params=params, rankdir=rankdir, title=title)


def _detail_level(detail) -> str:
    levels = {False: "values", True: "ops", "values": "values", "cells": "cells", "ops": "ops"}
    if not isinstance(detail, (bool, str)) or detail not in levels:
        raise ValueError(f"detail={detail!r}: expected False, True, 'values', 'cells' or 'ops'")
    return levels[detail]


def pipe(dot: graphviz.Digraph, fmt: str) -> bytes:
    """Run Graphviz on ``dot``; a missing ``dot`` program or a failed run is a RuntimeError that says why."""
    import graphviz

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
