"""Graph -> Graph passes, run in the order of :data:`PIPELINE`.

Each pass takes and returns an :class:`rnnc.ir.Graph` with the same meaning (the interpreter gives the same
results on both); ``run_pipeline(graph, dump=print)`` shows the graph's schedule after each pass.
"""
from __future__ import annotations

from rnnc.passes.cse import cse
from rnnc.passes.dce import dce, prune
from rnnc.passes.fold import fold
from rnnc.passes.fuse import fuse
from rnnc.passes.mask_bn import mask_bn
from rnnc.passes.merge_matmul import merge_matmul, merge_matmul_cpu
from rnnc.passes.merge_outer import merge_outer
from rnnc.passes.merge_sums import merge_sums, merge_sums_cpu
from rnnc.passes.remat import remat

#: clean-ups first, then merges of products, then fusion (shared by both pipelines)
CLEANUP = [("cse", cse), ("fold", fold), ("dce", dce)]
FINISH = [("cse2", cse), ("fuse", fuse)]

PIPELINE = CLEANUP + [("merge_matmul", merge_matmul)] + FINISH
# the CPU backend also stacks adjoints for sums of products and weight gradients (its renderer writes them
# straight into the stacked buffer), and keeps large per-step products and sums apart (see merge_matmul, merge_sums)
CPU_MERGES = [("merge_matmul", merge_matmul_cpu), ("merge_sums", merge_sums_cpu), ("merge_outer", merge_outer)]
# and a relu's mask is applied by the batch-norm input gradient it multiplies (see mask_bn)
CPU_MERGES += [("mask_bn", mask_bn)]
# then a scan's cheap values read by a later stage are recomputed there, not stored (see remat)
CPU_PIPELINE = CLEANUP + CPU_MERGES + FINISH + [("remat", remat)]


def run_pipeline(graph, passes=None, dump=None):
    """Apply ``passes`` (default :data:`PIPELINE`) in order; ``dump(name, graph)`` after each."""
    for name, fn in passes if passes is not None else PIPELINE:
        graph = fn(graph)
        if dump is not None:
            dump(name, graph)
    return graph


__all__ = ["PIPELINE", "CPU_PIPELINE", "run_pipeline", "cse", "fold", "dce", "prune", "fuse", "mask_bn",
           "merge_matmul", "merge_outer", "merge_sums", "remat"]
