"""The CPU op -> template table, assembled from one module per op family.

A template is ``fn(renderer, node)`` that emits the code computing ``node`` into ``renderer.out(node)``.
Leaves (input, param, lengths, const) and references are handled by the renderer itself. An op with a scalar
form (``OpDef.scalar_cpu``, a user's op among them) needs no entry: its loop is
:func:`rnnc.backends.cpu.ops_ewise.render_ewise`, found when the op is looked up. To add another op family
(e.g. ``rnnc/ops/image.py``), write its templates in a module here and merge its table below.
"""
from __future__ import annotations

from collections.abc import Callable

from rnnc.backends.cpu import (
    ops_batchnorm,
    ops_collective,
    ops_embedding,
    ops_ewise,
    ops_image,
    ops_linalg,
    ops_reduce,
    ops_structure,
)
from rnnc.ops.registry import LEAVES


class TemplateTable(dict):
    """op -> template; an op missing from the dict is asked of ``fallback(op)`` (the scalar-form loop for any op
    that has a scalar form), so ops registered after the table was built are found too."""

    def __init__(self, table: dict, fallback: Callable):
        super().__init__(table)
        self.fallback = fallback

    def __missing__(self, op):
        fn = self.fallback(op)
        if fn is None:
            raise KeyError(op)
        return fn

    def get(self, op, default=None):
        try:
            return self[op]
        except KeyError:
            return default

    def __contains__(self, op) -> bool:
        return dict.__contains__(self, op) or self.fallback(op) is not None


_TABLE: dict = {}
for _family in (ops_ewise, ops_linalg, ops_reduce, ops_structure, ops_image, ops_batchnorm, ops_embedding,
                ops_collective):
    _TABLE.update(_family.TEMPLATES)
TEMPLATES = TemplateTable(_TABLE, ops_ewise.template_for)

HANDLED_BY_RENDERER = frozenset(LEAVES) | {"ref"}


def missing_templates() -> list[str]:
    """Ops of :data:`rnnc.ops.OPS` with no CPU template (should be empty)."""
    from rnnc.ops import OPS

    return sorted(op for op in OPS if op not in TEMPLATES and op not in HANDLED_BY_RENDERER)
