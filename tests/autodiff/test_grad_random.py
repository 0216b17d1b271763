"""Hypothesis-drawn random recurrent models: rc.grad against finite differences and unrolled reverse mode."""
from __future__ import annotations

import numpy as np
from gradcheck import numeric_grad, rel_error
from hypothesis import given
from random_models import build, inputs_for, params_for, specs

import rnnc as rc
from rnnc.autodiff.unrolled import unrolled_gradients


@given(specs())
def test_random_model_gradients(s):
    m = build(s)
    rng = np.random.default_rng(s["seed"])
    inputs, params = inputs_for(m, s, rng), params_for(m, rng)
    got = rc.interpret(rc.grad(m), inputs, params).grads
    oracle = unrolled_gradients(m.unroll(t=s["T"]), inputs, params)

    def loss(p):
        return rc.interpret(m, inputs, p).loss

    work = {k: v.copy() for k, v in params.items()}
    for k in params:
        np.testing.assert_allclose(got[k], oracle[k], rtol=1e-10, atol=1e-12, err_msg=k)
        # relative to the gradient, floored at 1e-3: central differences of a loss of order 1 carry a roundoff
        # of about 1e-16 / eps = 1e-10, which is 1e-6 of a gradient of 1e-4 (a drawn model had one)
        numeric = numeric_grad(loss, work, k)
        assert np.abs(numeric - got[k]).max() <= 1e-6 * max(np.abs(got[k]).max(), 1e-3), (k, rel_error(numeric, got[k]))
