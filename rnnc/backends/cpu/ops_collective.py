"""CPU template of the collective op (:mod:`rnnc.ops.collective`).

``y = cross_rank_mean(x)`` is two steps: the stage's code copies ``x`` into ``y``'s buffer (any view or alias of
``x`` is read element by element, as every template reads), then ``run`` itself, between two stage functions,
reduces the buffer in place through the hook: ``ck.cross_rank_mean(v12)`` (a
:class:`~rnnc.backends.cpu.pieces.RunCall`, so no ``@njit`` function spans it and every rank calls it in the
same order). In one process the hook leaves the buffer as it is.
"""
from __future__ import annotations

from rnnc.backends.cpu.pieces import RunCall
from rnnc.errors import RnncError

#: the generated module's name for :mod:`rnnc.ops.collective` (imported only by modules that call it)
MODULE = "ck"
IMPORT = "from rnnc.ops import collective as ck  # noqa: F401"


def t_cross_rank_mean(r, node) -> None:
    """Copy the operand into the output buffer, then reduce that buffer in place from ``run``."""
    (x,) = node.inputs
    out = r.out(node)
    if out.literal is not None or out.offset or out.dims:
        raise RnncError(f"internal: cross_rank_mean ({node.label()} at {node.where}) needs a buffer of its own")
    r.fill_loops(node, out, lambda env, feats: r.read(x, env, feats, node.shape))
    r.em.mark(RunCall(MODULE, "cross_rank_mean_inplace", (out.var,), reads=(out.var,), writes=(out.var,),
                      comment=r.em.tag, threads=False))


TEMPLATES = {"cross_rank_mean": t_cross_rank_mean}
