"""Compile time linear in model size (issue 18, part 6): long elementwise chains and many signals compile to
bounded loop bodies and functions, with the interpreter's results; deep graphs never hit the recursion limit.

No timings here (``benchmarks/compile_scaling.py`` measures them): the checks are on structure, the fused
programs of the pass pipeline and the functions of the generated source.
"""
from __future__ import annotations

import ast
import importlib
import os
import sys

import numpy as np
import pytest
from paths import BENCHMARKS, CACHE_DIR

os.environ.setdefault("RNNC_CACHE_DIR", CACHE_DIR)

from compiled_check import assert_matches_interpreter  # noqa: E402

import rnnc as rc  # noqa: E402
import rnnc.backends.cpu.functions as functions  # noqa: E402
from rnnc.backends.cpu.functions import MAX_FUNCTION_LINES, stage_functions  # noqa: E402
from rnnc.backends.cpu.pieces import CUT, RunCall  # noqa: E402
from rnnc.backends.cpu.render import Renderer  # noqa: E402
from rnnc.backends.cpu.rendered import KERNEL  # noqa: E402
from rnnc.passes import CPU_PIPELINE, run_pipeline  # noqa: E402
from rnnc.passes.fuse import MAX_FUSED  # noqa: E402

sys.path.insert(0, str(BENCHMARKS))
from cells import CELLS  # noqa: E402
from compile_scaling import chained_adds, many_signals, nested_tanh, scan_chain  # noqa: E402

fuse_module = importlib.import_module("rnnc.passes.fuse")      # rnnc.passes.fuse is also the pass function

#: a function holds at most MAX_FUNCTION_LINES lines, or one node's loop nest: MAX_FUSED instructions and a
#: store per program, under a few loop headers
FUNCTION_BOUND = max(MAX_FUNCTION_LINES, 2 * MAX_FUSED + 8)


def _data(model, T=5, B=3, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.normal(scale=0.3, size=(T, B, 4))}
    params = {k: rng.normal(scale=0.5, size=v.shape) for k, v in sorted(model.graph.params.items())}
    return inputs, params


def _render(graph) -> str:
    return Renderer(run_pipeline(graph, CPU_PIPELINE), "float32", options=KERNEL).render().source


def _depth(node) -> int:
    """Nesting depth of an expression tree (iterative)."""
    most, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        most = max(most, d)
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))
    return most


def assert_bounded(source: str, scans: bool = False) -> None:
    """Every stage function of ``source`` within :data:`FUNCTION_BOUND` lines of code (unless ``scans``: a scan
    is one function, however long its step), every innermost loop body within ``MAX_FUSED`` instructions
    (``e = ...`` temporaries), every statement's expression shallow."""
    tree = ast.parse(source)
    lines = source.splitlines()
    funcs = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("stage_")]
    assert funcs
    for f in funcs:
        code = [ln for ln in lines[f.lineno:f.end_lineno - 1] if not ln.lstrip().startswith("#")]
        assert scans or len(code) <= FUNCTION_BOUND, (f.name, len(code))
        for loop in ast.walk(f):
            if isinstance(loop, ast.For) and not any(isinstance(s, ast.For) for s in loop.body):
                temps = [s for s in loop.body if isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name)
                         and s.targets[0].id.startswith("e")]
                assert len(temps) <= MAX_FUSED, (f.name, len(temps))
        for stmt in ast.walk(f):
            if isinstance(stmt, ast.Assign):
                assert _depth(stmt.value) <= 12, (f.name, ast.unparse(stmt)[:80])


def test_fused_programs_are_bounded():
    for model in (chained_adds(300), nested_tanh(300)):
        graph = run_pipeline(model.graph, CPU_PIPELINE)
        sizes = [len(n.attr("prog")) for n in graph.nodes if n.op == "fused"]
        assert len(sizes) >= 300 // MAX_FUSED and max(sizes) <= MAX_FUSED


@pytest.mark.parametrize("build", [chained_adds, nested_tanh], ids=["chained_adds", "nested_tanh"])
def test_long_chains_match_the_interpreter_in_bounded_functions(build):
    model = build(160)          # 2.5 x MAX_FUSED: several fused programs, and the gradient beyond one function
    f = rc.compile(model, dtype="float64")
    assert_matches_interpreter(f, model, *_data(model), 1e-10)
    for variant in ("loss", "grad"):
        assert_bounded(f.kernel(variant).source)


def test_a_chain_inside_a_scan_matches_the_interpreter():
    model = scan_chain(150)
    f = rc.compile(model, dtype="float64")
    assert_matches_interpreter(f, model, *_data(model), 1e-10)
    assert_bounded(f.kernel("loss").source, scans=True)


def test_many_scans_are_packed_into_few_functions():
    model = many_signals(12)
    f = rc.compile(model, dtype="float64")
    assert_matches_interpreter(f, model, *_data(model), 1e-10)
    for variant in ("loss", "grad"):
        source = f.kernel(variant).source
        assert_bounded(source)
        scans = 12 if variant == "loss" else 24         # the gradient's reverse scans too
        assert source.count("def stage_") <= scans // 3, variant     # one function per scan before packing


def test_deep_graphs_need_no_recursion():
    """2,000 nested tanh (twice Python's default recursion limit) through the interpreter, the gradient, the
    schedule, the pass pipeline and rendering; the generated module parses."""
    assert sys.getrecursionlimit() <= 1000 + 500
    model = nested_tanh(2000)
    inputs, params = _data(model, T=2, B=2)
    out = rc.interpret(model, inputs, params)
    assert np.all(np.isfinite(out.outputs["out"]))
    gm = rc.grad(model)
    assert np.all(np.isfinite(rc.interpret(gm, inputs, params).grads["w"]))
    assert "map over t" in str(rc.schedule(model))
    for graph in (model.graph, gm.graph):
        source = _render(graph)
        compile(source, "<generated>", "exec")
        assert_bounded(source)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_the_bounds_never_split_a_cell(cell, monkeypatch):
    """The benchmark cells' generated modules (forward and gradient) are the same with the bounds lifted."""
    m = CELLS[cell](8, 16)
    graphs = [m.graph, rc.grad(m, wrt=[*m.graph.params, "x"]).graph]
    bounded = [_render(g) for g in graphs]
    monkeypatch.setattr(fuse_module, "MAX_FUSED", 10**9)
    monkeypatch.setattr(functions, "MAX_FUNCTION_LINES", 10**9)
    assert [_render(g) for g in graphs] == bounded


# ---------------------------------------------------------------- stage_functions on hand-written stages
def _loop(body: str) -> list:
    return ["    for ib in range(b0_, b1_):", f"        {body}"]


def test_row_block_pieces_of_consecutive_stages_share_a_function():
    lines = _loop("a[ib] = x[ib]") + _loop("b[ib] = a[ib]")
    mod = stage_functions(lines, [(1, 0, 2), (2, 2, 4)], ["nb", "x", "a", "b"], ["scan", "scan"], split={1, 2})
    funcs = mod.function_lines()
    assert sum(ln.startswith("def ") for ln in funcs) == 1
    assert "def stage_1(x, a, b, b0_, b1_):" in funcs
    assert [(k, [c.call() for c in cs]) for k, cs in mod.calls] == [
        (1, ["    _blocks(stage_1, parts_, nb, x, a, b)  # stage_1 in row blocks"]), (2, [])]


@pytest.mark.parametrize("case", ["barrier", "run line", "not split"])
def test_pieces_are_not_packed_across_what_run_does_between_them(case):
    lines = _loop("a[ib] = x[ib]") + ([RunCall("lak", "f", ("a",), reads=("a",))] if case == "run line" else []) \
        + _loop("b[ib] = a[ib]")
    spans = [(1, 0, 2), (2, 2, len(lines))]
    funcs = stage_functions(lines, spans, ["nb", "x", "a", "b"], ["scan", "scan"],
                            split={1} if case == "not split" else {1, 2},
                            barriers={1} if case == "barrier" else set()).function_lines()
    assert sum(ln.startswith("def ") for ln in funcs) == 2


def test_a_long_map_piece_is_cut_between_nodes(monkeypatch):
    monkeypatch.setattr(functions, "MAX_FUNCTION_LINES", 4)
    lines = []
    for k in range(5):
        lines += [CUT, "    for i0 in range(n0):", f"        v{k + 1}[i0] = v{k}[i0]"]
    mod = stage_functions(lines, [(1, 0, len(lines))], ["n0"] + [f"v{k}" for k in range(6)], ["map"])
    funcs, calls = mod.function_lines(), mod.calls
    assert [ln for ln in funcs if ln.startswith("def ")] == [
        "def stage_1(n0, v0, v1, v2):", "def stage_1_1(n0, v2, v3, v4):", "def stage_1_2(n0, v4, v5):"]
    assert len(calls[0][1]) == 3
