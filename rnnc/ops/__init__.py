"""Ops: each op's shape rule, numpy reference and VJP in one place (see :mod:`rnnc.ops.registry`)."""
# image registers conv2d, pooling, channel_mean, to_grid, from_grid; operators gives IR nodes + - * / @ and x[i]
from rnnc.ops import image, operators  # noqa: F401
from rnnc.ops.activations import absolute, clip, maximum, minimum, power, softplus
from rnnc.ops.batchnorm import batch_norm, bn_stats
from rnnc.ops.collective import cross_rank_mean
from rnnc.ops.elementwise import add, div, exp, log, mul, neg, positive, relu, sigmoid, sqrt, square, sub, tanh, where
from rnnc.ops.embedding import embedding
from rnnc.ops.extend import register_op, unregister_op
from rnnc.ops.layernorm import layer_norm
from rnnc.ops.leaves import leaf, ref, step_mask
from rnnc.ops.linalg import matmul, outer_sum, transpose
from rnnc.ops.losses import binary_cross_entropy, mse, softmax_cross_entropy
from rnnc.ops.reduce import batch_mean, edge_sum, expand, fmax, fmean, fsum, max_mask, sum_to
from rnnc.ops.registry import OPS, OpDef, as_node, make, opdef, ops_with, register
from rnnc.ops.structure import concat, feature_index, log_softmax, one_hot, reshape, slice_features, softmax, split

__all__ = [
    "OPS", "OpDef", "as_node", "make", "opdef", "ops_with", "register", "register_op", "unregister_op",
    "add", "sub", "mul", "div", "neg", "exp", "log", "tanh", "sigmoid", "relu", "sqrt", "square",
    "positive", "where", "matmul", "transpose", "outer_sum", "fsum", "fmean", "fmax", "max_mask", "expand",
    "sum_to", "edge_sum", "batch_mean", "concat", "slice_features", "split", "feature_index", "reshape",
    "one_hot", "softmax", "log_softmax", "softmax_cross_entropy", "binary_cross_entropy", "mse",
    "leaf", "ref", "step_mask", "batch_norm", "bn_stats", "cross_rank_mean",
    "softplus", "absolute", "minimum", "maximum", "power", "clip", "embedding", "layer_norm",
]
