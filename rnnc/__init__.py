"""rnnc: a compiler for recurrent neural networks.

Write ``h[t] = tanh(U @ x[t] + W @ h[t-1] + b)``; rnnc checks the cyclic graph, schedules it into maps and
scans, unrolls and draws it, interprets it in numpy, derives its BPTT gradients and compiles it.
"""
from rnnc.autodiff import GradModel, grad
from rnnc.dsl import init
from rnnc.dsl.model import Model, axes, t
from rnnc.errors import CycleError, GraphError, InputError, RnncError, ShapeError
from rnnc.flops import FlopCount, flops
from rnnc.interpret import interpret, interpret_unrolled
from rnnc.io import load, save
from rnnc.ir.node import Axis
from rnnc.ops import absolute as abs  # noqa: A004
from rnnc.ops import (
                      add,
                      binary_cross_entropy,
                      clip,
                      concat,
                      div,
                      embedding,
                      exp,
                      fmax,
                      fmean,
                      fsum,
                      layer_norm,
                      log,
                      log_softmax,
                      matmul,
                      maximum,
                      minimum,
                      mse,
                      mul,
                      neg,
                      one_hot,
                      register_op,
                      relu,
                      reshape,
                      sigmoid,
                      softmax,
                      softmax_cross_entropy,
                      softplus,
                      split,
                      sqrt,
                      square,
                      sub,
                      tanh,
                      where,
)
from rnnc.ops import power as pow  # noqa: A004
from rnnc.ops.reduce import batch_mean
from rnnc.reductions import first, last, mean, sum
from rnnc.runtime import compile  # noqa: A004
from rnnc.schedule import schedule
from rnnc.summary import summary
from rnnc.version import __version__ as __version__
from rnnc.viz import render

__all__ = [
    "CycleError", "GraphError", "InputError", "RnncError", "ShapeError", "Axis", "Model", "axes", "t", "init",
    "add", "sub", "mul", "div", "neg", "exp", "log", "tanh", "sigmoid", "relu", "sqrt", "square", "where",
    "matmul", "concat", "split", "reshape", "one_hot", "softmax", "log_softmax", "softmax_cross_entropy",
    "binary_cross_entropy", "mse", "fsum", "fmean", "fmax", "batch_mean", "schedule", "interpret",
    "interpret_unrolled", "last", "first", "sum", "mean", "render", "compile", "grad", "GradModel", "summary",
    "save", "load", "softplus", "abs", "minimum", "maximum", "pow", "clip", "embedding", "layer_norm",
    "register_op", "flops", "FlopCount",
]
