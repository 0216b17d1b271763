"""The op table in the CUDA simulator (the CPU half is tests/ops/test_op_table.py): the scalar-form ops added with
``rc.register_op`` (softplus, abs, minimum, maximum, pow, clip), a user's op defined here through the public API,
and the embedding / layer-norm model, forward and ``loss_and_grad`` equal to the interpreter in float64.

Small on purpose: the simulator runs a Python thread per CUDA thread.
"""
from __future__ import annotations

import numpy as np
from compiled_check import assert_matches_interpreter
from op_cases import OP_TOL, lookup_data, lookup_model, scalar_data, scalar_model

import rnnc as rc
from rnnc.ops.scalar import exp, log1p, maximum

NEW_OPS = ["abs", "clip", "maximum", "minimum", "pow", "softplus"]


@rc.register_op(numpy=lambda x: np.logaddexp(0.0, x), vjp=lambda g, y, x: g * rc.sigmoid(x))
def softplus_cuda_user(x):
    return maximum(x, 0.0) + log1p(exp(-abs(x)))


def _check(m, inputs, params):
    f = rc.compile(m, target="cuda", dtype="float64")
    assert_matches_interpreter(f, m, inputs, params, **OP_TOL, call={"to_host": True})


def test_new_scalar_ops_and_a_user_op_cuda_equal_interpreter():
    m = scalar_model(NEW_OPS + ["softplus_cuda_user"])
    _check(m, *scalar_data(m))


def test_embedding_and_layer_norm_cuda_equal_interpreter():
    m = lookup_model()
    _check(m, *lookup_data(m))
