"""CPU templates of elementwise ops (and fused chains of them): one loop nest, one scalar temp per op.

A fused node holds a small program (see :mod:`rnnc.passes.fuse`); a plain elementwise node is a program of
one instruction. Feature indices flow from the result down to each operand by numpy broadcasting, plus the
index shift of ``slice`` and the dropped dims of ``expand``.
"""
from __future__ import annotations

from rnnc.backends.cpu.emit import align_feats, feat_ranges

# op -> scalar expression of its operand expressions (one table for the whole family)
SCALAR = {
    "add": lambda a, b: f"({a} + {b})",
    "sub": lambda a, b: f"({a} - {b})",
    "mul": lambda a, b: f"({a} * {b})",
    "div": lambda a, b: f"({a} / {b})",
    "neg": lambda a: f"(-{a})",
    "exp": lambda a: f"math.exp({a})",
    "log": lambda a: f"math.log({a})",
    "tanh": lambda a: f"math.tanh({a})",
    "sigmoid": lambda a: f"(F(1.0) / (F(1.0) + math.exp(-{a})))",
    "relu": lambda a: f"({a} if {a} > F(0.0) else F(0.0))",
    "sqrt": lambda a: f"math.sqrt({a})",
    "square": lambda a: f"({a} * {a})",
    "positive": lambda a: f"(F(1.0) if {a} > 0 else F(0.0))",
    "where": lambda c, a, b: f"({a} if {c} != 0 else {b})",
    "slice": lambda a: a,
    "expand": lambda a: a,
}
FUSABLE = frozenset(SCALAR)


def program_of(node) -> list:
    """The instruction list of an elementwise node: [(op, shape, attrs, args)], args ("in", k) / ("t", j)."""
    if node.op == "fused":
        return [(op, shape, dict(attrs), args) for op, shape, attrs, args in node.attr("prog")]
    return [(node.op, node.shape, dict(node.attrs), tuple(("in", k) for k in range(len(node.inputs))))]


def _child_feats(op, attrs, shape, feats, child_shape) -> list:
    if op == "slice":
        return feats[:-1] + [f"{feats[-1]} + {attrs['start']}"] if attrs["start"] else list(feats)
    if op == "expand":
        return [] if attrs.get("axis") is None else feats[:-1]
    return align_feats(feats, shape, child_shape)


def render_ewise(r, node) -> None:
    """``out = program(inputs)`` in one loop nest over the node's index space."""
    prog = program_of(node)
    out = r.out(node)
    dims = r.space(node)
    env = r.env(dims)
    root_feats = [v for v, _ in feat_ranges(node.shape)]
    feats = {len(prog) - 1: root_feats}
    reads = {}
    for j in range(len(prog) - 1, -1, -1):
        op, shape, attrs, args = prog[j]
        for arg in args:
            child_shape = prog[arg[1]][1] if arg[0] == "t" else node.inputs[arg[1]].shape
            cf = _child_feats(op, attrs, shape, feats[j], child_shape)
            if arg[0] == "t":
                feats[arg[1]] = cf
            else:
                reads[(j, arg)] = r.buf(node.inputs[arg[1]]).at(env, cf)
    with r.em.loops(r.lead_ranges(dims) + feat_ranges(node.shape)):
        for j, (op, _shape, _attrs, args) in enumerate(prog):
            operands = [f"e{a[1]}" if a[0] == "t" else reads[(j, a)] for a in args]
            r.em.line(f"e{j} = {SCALAR[op](*operands)}")
        r.em.line(f"{out.at(env, root_feats)} = e{len(prog) - 1}")


TEMPLATES = {op: render_ewise for op in FUSABLE}
TEMPLATES["fused"] = render_ewise
