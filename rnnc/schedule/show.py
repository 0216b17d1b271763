"""Readable text for stages: each result of a stage as an inline expression of the stage's intermediates."""
from __future__ import annotations

from rnnc.ir.node import Node

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@"}


def _atom(node: Node, names: dict) -> str | None:
    if node in names and node.op != "ref":
        return names[node]
    if node.op == "const":
        v = node.attr("value")
        return str(int(v)) if float(v).is_integer() else f"{v:g}"
    if node.op in ("input", "param", "lengths"):
        return node.name
    if node.op == "ref":
        value, off, axis = node.attr("value"), node.attr("offset"), node.attr("axis")
        idx = [a.name if a != axis or not off else f"{a.name}{off:+d}" for a in node.axes]
        return f"{value}[{','.join(idx)}]" if idx else value
    return None


def expression(root: Node, names: dict, inline: set) -> str:
    """``root`` as text; nodes in ``inline`` are expanded, others shown by name (iterative)."""
    text: dict = {}
    infix: set = set()
    stack = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if node in text:
            continue
        atom = _atom(node, names) if node is not root else None
        if atom is None and node is not root and node not in inline:
            atom = f"%{node.id}"
        if atom is not None:
            text[node] = atom
            continue
        if not ready:
            stack.append((node, True))
            stack.extend((i, False) for i in node.inputs)
            continue
        args = [text[i] for i in node.inputs]
        if node.op in _INFIX and len(args) == 2:
            args = [f"({a})" if i in infix else a for a, i in zip(args, node.inputs)]
            text[node] = f"{args[0]} {_INFIX[node.op]} {args[1]}"
            infix.add(node)
        elif node.op == "neg":
            text[node] = f"-{args[0]}"
        else:
            extra = [f"{k}={v.name if hasattr(v, 'order') else v}" for k, v in node.attrs.items()
                     if k in ("axis", "start", "stop", "classes")]
            text[node] = f"{node.op}({', '.join(args + extra)})"
    return text[root]
