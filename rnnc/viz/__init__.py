"""Drawings of folded models, unrolled graphs and gradient models (Graphviz).

``render(obj, path)`` writes a drawing, ``to_dot(obj)`` returns the Graphviz graph, ``svg(obj)`` its SVG text;
``folded`` draws models with delays as back arcs, ``unrolled`` one column per step at positions computed in
``layout``, ``names`` holds the names drawings show (``L[t]``, ``δh``, ``∂L/∂W``).
"""
from rnnc.viz.render import render, svg, to_dot

__all__ = ["render", "svg", "to_dot"]
