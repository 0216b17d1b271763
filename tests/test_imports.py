"""No import cycles between rnnc's modules: the graph of top-level imports (``import`` statements in a module's
body, outside ``if TYPE_CHECKING:``), read statically with :mod:`ast`, has no cycle. An import inside a
function runs late and is not an edge; a package's ``__init__`` is not implied by importing a module in it."""
from __future__ import annotations

import ast
from pathlib import Path

from paths import PACKAGE as ROOT


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module):
    """Import statements of the module's body, also inside top-level ``if`` / ``try``, not ``if TYPE_CHECKING``."""
    stack = list(tree.body)
    while stack:
        st = stack.pop()
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            yield st
        elif isinstance(st, ast.If):
            if not (isinstance(st.test, ast.Name) and st.test.id == "TYPE_CHECKING"):
                stack += st.body + st.orelse
        elif isinstance(st, ast.Try):
            stack += st.body + st.orelse + st.finalbody + [s for h in st.handlers for s in h.body]


def _every_import(tree: ast.Module):
    """Every import statement that runs, also inside functions (they run later, but still make the modules depend
    on each other); not those under ``if TYPE_CHECKING:`` (annotations only)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack += node.orelse
        else:
            stack += ast.iter_child_nodes(node)


def import_graph(statements=_top_level_imports) -> dict:
    """module -> set of rnnc modules it imports (at top level, or by any ``statements`` finder)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for st in statements(ast.parse(path.read_text(), str(path))):
            if isinstance(st, ast.Import):
                targets = [a.name for a in st.names]
            else:
                base = st.module or ""
                if st.level:
                    up = package.split(".")[: len(package.split(".")) - (st.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in st.names]
            graph[mod] |= {t for t in targets if t in files and t != mod}
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_rnnc_has_no_import_cycles():
    graph = import_graph()
    assert "rnnc.backends.cpu.render" in graph and graph["rnnc.backends.cpu.render"]
    assert cycles(graph) == []


def test_no_cycles_through_imports_inside_functions_either():
    """A function-local import that closes a cycle only hides it (issue 21 named runtime.compiled <-> runtime.cuda,
    interpret.rolled <-> interpret.checkpoint, ir.node -> rnnc.ops, cpu.refs <-> cpu.render); none is left."""
    graph = import_graph(_every_import)
    assert "rnnc.runtime.cuda" in graph["rnnc.runtime.targets"]        # a function-local import is an edge here
    assert cycles(graph) == []


def test_import_rnnc_leaves_the_kernel_libraries_unloaded():
    """``import rnnc`` must not load gemm or the image kernels: gemm compiles its typed helpers on import, which
    took 5.6 s with an empty kernel cache when the image kernels were imported with rnnc."""
    import subprocess
    import sys

    code = ("import sys, rnnc; print(sorted(m for m in ('rnnc.backends.cpu.gemm', 'rnnc.backends.cpu.kernels_image',"
            " 'rnnc.backends.cpu.kernels_linalg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
