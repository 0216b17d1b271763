"""Drawings of folded models and unrolled graphs (Graphviz)."""


def render(*a, **k):
    from rnnc.viz.render import render as _render

    return _render(*a, **k)


def to_dot(*a, **k):
    from rnnc.viz.render import to_dot as _to_dot

    return _to_dot(*a, **k)
