"""Ops: each op's shape rule, numpy reference and VJP in one place (see :mod:`rnnc.ops.registry`)."""
from rnnc.ops.registry import OPS, OpDef, as_node, make, opdef, register
from rnnc.ops.elementwise import (add, sub, mul, div, neg, exp, log, tanh, sigmoid, relu, sqrt, square,
                                  positive, where)
from rnnc.ops.linalg import matmul, transpose, outer_sum
from rnnc.ops.reduce import (fsum, fmean, fmax, max_mask, expand, sum_to, edge_sum, batch_mean)
from rnnc.ops.structure import (concat, slice_features, split, feature_index, reshape, one_hot, softmax,
                                log_softmax)
from rnnc.ops.losses import softmax_cross_entropy, binary_cross_entropy, mse
from rnnc.ops.leaves import leaf, ref, step_mask
from rnnc.ops import image  # noqa: F401  (registers conv2d, pooling, channel_mean, to_grid, from_grid)

__all__ = [
    "OPS", "OpDef", "as_node", "make", "opdef", "register",
    "add", "sub", "mul", "div", "neg", "exp", "log", "tanh", "sigmoid", "relu", "sqrt", "square",
    "positive", "where", "matmul", "transpose", "outer_sum", "fsum", "fmean", "fmax", "max_mask", "expand",
    "sum_to", "edge_sum", "batch_mean", "concat", "slice_features", "split", "feature_index", "reshape",
    "one_hot", "softmax", "log_softmax", "softmax_cross_entropy", "binary_cross_entropy", "mse",
    "leaf", "ref", "step_mask",
]
