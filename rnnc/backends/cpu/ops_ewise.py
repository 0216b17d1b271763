"""CPU templates of elementwise ops (and fused chains of them): one loop nest, one scalar temp per op.

A fused node holds a small program (see :mod:`rnnc.passes.fuse`); a plain elementwise node is a program of
one instruction. Feature indices flow from the result down to each operand by numpy broadcasting, plus the
index shift of ``slice`` and the dropped dims of ``expand``.
"""
from __future__ import annotations

from rnnc.backends.cpu.emit import align_feats, feat_ranges
from rnnc.ops.registry import OPS, ops_with
from rnnc.ops.scalar import render as render_scalar

#: ops with a scalar form (rnnc.ops.registry.OpDef.scalar_cpu): each becomes one scalar expression in the loop
FUSABLE = ops_with(fusable=True)
# with ``r.vector_math`` (the CPU kernel), tanh and sigmoid in a scalar form call helpers defined in the module
# head (see :data:`MATH_HELPERS`; rnnc.ops.scalar.render). They are plain jitted functions, which LLVM inlines
# into each stage when it links them (the same machine code as Numba's ``inline="always"``, compared on an LSTM
# step body), without Numba's IR inlining: that took about 0.1 s of compile time per call site (64 nested tanh:
# 13 s in one body), a plain call about 0.01 s

_TANH32 = """
@numba.njit
def tanh_(x):
    # float32 tanh without libm, so loops vectorise: Eigen's ptanh_float, a 13/6 odd rational approximation
    # fitted on [-7.9053, 7.9053] (absolute error < 3e-7); the stages' multiply-adds leave it 2.4e-7 short of 1
    # there, past it it grows: x clamped to [-9, 9] and the result to [-1, 1] give exactly +-1 far out
    x = min(max(x, F(-9.0)), F(9.0))
    x2 = x * x
    p = x2 * F(-2.76076847742355e-16) + F(2.00018790482477e-13)
    p = x2 * p + F(-8.60467152213735e-11)
    p = x2 * p + F(5.12229709037114e-08)
    p = x2 * p + F(1.48572235717979e-05)
    p = x2 * p + F(6.37261928875436e-04)
    p = x2 * p + F(4.89352455891786e-03)
    q = x2 * F(1.19825839466702e-06) + F(1.18534705686654e-04)
    q = x2 * q + F(2.26843463243900e-03)
    q = x2 * q + F(4.89352518554385e-03)
    return min(max(x * p / q, F(-1.0)), F(1.0))


@numba.njit
def sigmoid_(x):
    # sigma(x) = (1 + tanh(x / 2)) / 2: vectorisable; absolute error < 2e-7
    return F(0.5) + F(0.5) * tanh_(F(0.5) * x)
"""

_TANH64 = """
@numba.njit
def tanh_(x):
    return math.tanh(x)


@numba.njit
def sigmoid_(x):
    return F(1.0) / (F(1.0) + math.exp(-x))
"""

MATH_HELPERS = {"float32": _TANH32, "float64": _TANH64}


def program_of(node) -> list:
    """The instruction list of an elementwise node: [(op, shape, attrs, args)], args ("in", k) / ("t", j)."""
    if node.op == "fused":
        return [(op, shape, dict(attrs), args) for op, shape, attrs, args in node.attr("prog")]
    return [(node.op, node.shape, dict(node.attrs), tuple(("in", k) for k in range(len(node.inputs))))]


def shifted(feat: str, offset: int) -> str:
    """The index ``feat + offset`` of a slice's read (:func:`slice_offset` reads it back)."""
    return f"{feat} + {offset}"


def slice_offset(cf: list, feat: str = "f0"):
    """``o`` when the feature indices ``cf`` are ``[shifted(feat, o)]`` (or ``[feat]``: 0), else None."""
    if cf == [feat]:
        return 0
    head = shifted(feat, "")
    if len(cf) != 1 or not cf[0].startswith(head) or not cf[0][len(head):].isdigit():
        return None
    return int(cf[0][len(head):])


def _child_feats(op, attrs, shape, feats, child_shape) -> list:
    if op == "slice":
        return feats[:-1] + [shifted(feats[-1], attrs["start"])] if attrs["start"] else list(feats)
    if op == "expand":
        return [] if attrs.get("axis") is None else feats[:-1]
    return align_feats(feats, shape, child_shape)


def scalar_line(r, op: str, operands: list, cuda: bool = False) -> str:
    """The scalar expression of one instruction: the op's scalar form over ``operands`` (rnnc's own expressions)."""
    spec = OPS[op]
    form = spec.scalar_cuda if cuda else spec.scalar_cpu
    if form is None:
        raise NotImplementedError(f"op {op!r} has no scalar form for the {'CUDA' if cuda else 'CPU'} backend")
    return render_scalar(form, operands, vector_math=bool(r.options.vector_math) and not cuda)


def render_ewise(r, node) -> None:
    """``out = program(inputs)`` in one loop nest over the node's index space."""
    render_ewise_group(r, [node])


def render_ewise_cuda(r, node) -> None:
    """:func:`render_ewise` with each op's CUDA scalar form (``OpDef.scalar_cuda``)."""
    render_ewise_group(r, [node], cuda=True)


def render_ewise_group(r, nodes, cuda: bool = False) -> None:
    """Sibling elementwise nodes over the same index space in ONE loop nest (an LSTM step's gate, cell and
    hidden updates): each node's program in turn, a member read by a later member passed on in a register.
    The renderer checks that members read each other only at the same element (:func:`can_join`)."""
    dims = r.space(nodes[0])
    env = r.env(dims)
    root_feats = [v for v, _ in feat_ranges(nodes[0].shape)]
    temps: dict = {}
    if len(nodes) > 1:
        r.em.tag = f"{', '.join(r.var_of(n) for n in nodes)} in one loop nest"
        r.em.where = nodes[0].where
    else:
        r.tag_node(nodes[0])
    with r.em.loops(r.sized_by(r.lead_ranges(dims) + feat_ranges(nodes[0].shape), r.out(nodes[0]))):
        for k, node in enumerate(nodes):
            r.tag_node(node)
            name = f"e{k}_" if len(nodes) > 1 else "e"
            prog = program_of(node)
            reads = _reads(r, node, prog, env, root_feats, temps)
            for j, (op, _shape, _attrs, args) in enumerate(prog):
                operands = [f"{name}{a[1]}" if a[0] == "t" else reads[(j, a)] for a in args]
                r.em.line(f"{name}{j} = {scalar_line(r, op, operands, cuda)}")
            r.em.line(f"{r.out(node).at(env, root_feats)} = {name}{len(prog) - 1}")
            temps[node] = f"{name}{len(prog) - 1}"


def _arg_feats(node, prog, root_feats) -> dict:
    """Feature indices at which each input argument ``(j, ("in", k))`` of the program is read."""
    feats = {len(prog) - 1: root_feats}
    out = {}
    for j in range(len(prog) - 1, -1, -1):
        op, shape, attrs, args = prog[j]
        for arg in args:
            child_shape = prog[arg[1]][1] if arg[0] == "t" else node.inputs[arg[1]].shape
            cf = _child_feats(op, attrs, shape, feats[j], child_shape)
            if arg[0] == "t":
                feats[arg[1]] = cf
            else:
                out[(j, arg)] = list(cf)
    return out


def same_step(r, node):
    """The value a same-step reference ``s[t]`` reads (it has no code of its own), else ``node``."""
    return r.graph.value_of(node) if node.op == "ref" and not node.attr("offset") else node


def _reads(r, node, prog, env, root_feats, temps) -> dict:
    """The expression each input argument reads: an input's element, or a group member's register."""
    reads = {}
    for (j, arg), cf in _arg_feats(node, prog, root_feats).items():
        src = node.inputs[arg[1]]
        member = temps.get(same_step(r, src))
        reads[(j, arg)] = member if member and cf == list(root_feats) else r.buf(src).at(env, cf)
    return reads


def member_reads(node, root_feats) -> list:
    """(input node, feature indices) of every input element ``node``'s program reads."""
    return [(node.inputs[arg[1]], cf) for (_j, arg), cf in _arg_feats(node, program_of(node), root_feats).items()]


def template_for(op: str, cuda: bool = False):
    """The loop template of an op with a scalar form (any op of :data:`FUSABLE`, registered before or after this
    module was imported), or of ``fused``; None for other ops."""
    if op in FUSABLE or op == "fused":
        return render_ewise_cuda if cuda else render_ewise
    return None


TEMPLATES = {"fused": render_ewise}      # the others come from template_for (see rnnc.backends.cpu.ops)
