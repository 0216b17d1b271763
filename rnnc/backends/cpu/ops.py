"""The CPU op -> template table, assembled from one module per op family.

A template is ``fn(renderer, node)`` that emits the code computing ``node`` into ``renderer.out(node)``.
Leaves (input, param, lengths, const) and references are handled by the renderer itself. To add an op family
(e.g. ``rnnc/ops/image.py``), write its templates in a module here and merge its table below.
"""
from __future__ import annotations

from rnnc.backends.cpu import ops_batchnorm, ops_ewise, ops_image, ops_linalg, ops_reduce, ops_structure

TEMPLATES: dict = {}
for _family in (ops_ewise, ops_linalg, ops_reduce, ops_structure, ops_image, ops_batchnorm):
    TEMPLATES.update(_family.TEMPLATES)

HANDLED_BY_RENDERER = ("input", "param", "lengths", "const", "ref")


def missing_templates() -> list[str]:
    """Ops of :data:`rnnc.ops.OPS` with no CPU template (should be empty)."""
    from rnnc.ops import OPS

    return sorted(op for op in OPS if op not in TEMPLATES and op not in HANDLED_BY_RENDERER)
