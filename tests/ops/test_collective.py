"""The collective op (rnnc/ops/collective.py) in one process: the identity unless a reduction is installed,
the same through the interpreter and the compiled CPU kernel (where ``run`` calls it between two stages, forward
and backward), the gradient kernel's ``ready`` hook, the CUDA backend's refusal, and synchronised batch norm,
which in one process is the default batch norm. Over MPI: tests/train/test_distributed.py."""
import numpy as np
import pytest
from gradcheck import check_param_grads

import rnnc as rc
import rnnc.nn as nn
from rnnc.autodiff import grad
from rnnc.ops.collective import across_ranks, cross_rank_mean
from rnnc.runtime.kernel import Kernel


def model():
    """Per-sample features, their batch statistics through the collective, and a loss that reads them."""
    m = rc.Model("crm")
    x, y = m.input("x", 4, axes=()), m.input("y", 4, axes=())
    W, b = m.param("W", (4, 4)), m.param("b", 4)
    h = rc.tanh(W @ x + b)
    g = cross_rank_mean(rc.ops.bn_stats(h))
    m.output("g", g)
    m.loss(rc.mse(h * rc.ops.slice_features(g, 0, 4) + rc.ops.slice_features(g, 4, 8), y))
    return m


@pytest.fixture(scope="module")
def case():
    m = model()
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(5, 4)), "y": rng.normal(size=(5, 4))}
    return m, inputs, m.init_params(seed=0, dtype="float64"), Kernel(grad(m).graph, "float64")


def test_identity_in_one_process_and_compiled_equals_interpreter(case):
    m, inputs, params, k = case
    ref = rc.interpret(rc.grad(m), inputs, params, dtype="float64")
    bufs = k.call(k.bind(inputs, params))
    assert abs(k.result(bufs, "loss") - ref.loss) < 1e-12
    for name in params:
        np.testing.assert_allclose(k.result(bufs, "grads", name), ref.grads[name], rtol=0, atol=1e-12)
    stats = rc.interpret(m, inputs, params, dtype="float64").outputs["g"]
    h = np.tanh(inputs["x"] @ params["W"].T + params["b"])
    np.testing.assert_allclose(stats, np.concatenate([h.mean(0), h.var(0)]), rtol=1e-12)
    assert max(check_param_grads(m, inputs, params).values()) < 1e-6


def test_run_calls_the_hook_forward_and_backward(case):
    """Installed, the reduction runs once per collective node: forward (the statistics) and backward (their
    adjoints, the VJP being the same collective); interpreter and kernel call it alike and agree."""
    m, inputs, params, k = case
    seen = {"interp": [], "kernel": []}
    for who in seen:
        def twice(a, who=who):
            seen[who].append(a.shape)
            return 2.0 * a
        with across_ranks(mean=twice):
            if who == "interp":
                ref = rc.interpret(rc.grad(m), inputs, params, dtype="float64")
            else:
                bufs = k.call(k.bind(inputs, params))
    assert seen["interp"] == seen["kernel"] == [(8,), (8,)]
    assert abs(k.result(bufs, "loss") - ref.loss) < 1e-12
    for name in params:
        np.testing.assert_allclose(k.result(bufs, "grads", name), ref.grads[name], rtol=0, atol=1e-12)
    run = k.source.split("\ndef run(")[1]
    assert run.count("ck.cross_rank_mean_inplace(") == 2 and "_ready(" in run


def test_ready_hook_announces_every_gradient_once_complete(case):
    m, inputs, params, k = case
    got: dict = {}

    def ready(grads):
        assert not set(grads) & set(got)
        got.update({name: g.copy() for name, g in grads.items()})

    with across_ranks(ready=ready):
        bufs = k.call(k.bind(inputs, params))
    assert set(got) == set(params)
    for name in params:
        np.testing.assert_array_equal(got[name], k.result(bufs, "grads", name))
    bufs = k.call(k.bind(inputs, params))          # outside across_ranks: nobody is told
    assert set(got) == set(params)


def test_refused_on_shared_values_only_and_by_cuda():
    from rnnc.backends.cuda.ops import UnsupportedCollective
    from rnnc.backends.cuda.render import CudaRenderer

    m = rc.Model("bad")
    x = m.input("x", 4, axes=())
    with pytest.raises(rc.errors.ShapeError, match="shared by every sample"):
        cross_rank_mean(x)
    with pytest.raises(UnsupportedCollective, match="CUDA backend does not run collectives"):
        CudaRenderer(model().graph, "float32").render()


def bn_classifier():
    return nn.Classifier((nn.Conv2d(3, 3, padding=1, activation="relu"), nn.BatchNorm(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dense(2), nn.Softmax()), (1, 6, 6))


def test_sync_batchnorm_in_one_process_is_the_default_batchnorm():
    clf = bn_classifier()
    plain, synced = clf.build(train=True), clf.build(train=True, sync_batchnorm=True)
    assert "cross_rank_mean" in {n.op for n in synced.model.graph.nodes}
    rng = np.random.default_rng(1)
    data = {"x": rng.standard_normal((7, 1, 6, 6)), "y": rng.integers(0, 2, 7)}
    params = plain.model.init_params(0, "float64")
    a = rc.interpret(rc.grad(plain.model), data, params, dtype="float64")
    b = rc.interpret(rc.grad(synced.model), data, params, dtype="float64")
    assert abs(a.loss - b.loss) < 1e-12
    for name in params:
        np.testing.assert_allclose(b.grads[name], a.grads[name], rtol=1e-9, atol=1e-12)
    for stat in ("bn1_batch_mean", "bn1_batch_var"):
        np.testing.assert_allclose(b.outputs[stat], a.outputs[stat], rtol=1e-9, atol=1e-12)


class _OneRank:
    """Enough of an mpi4py communicator for DataParallel's constructor."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Iallreduce(self, *a):
        raise AssertionError("not reached")


def test_trainer_builds_the_synchronised_network_or_refuses_a_per_rank_one():
    from rnnc.train import Adam, Trainer
    from rnnc.train.distributed import DataParallel

    clf = bn_classifier()
    tr = Trainer(clf, Adam(1e-3), comm=DataParallel(_OneRank(), sync_batchnorm=True), progress=False)
    assert "cross_rank_mean" in {n.op for n in tr.train_net.model.graph.nodes} and tr.parallel.collectives
    nets = (clf.build(train=True), clf.build(train=False))
    with pytest.raises(ValueError, match="built with per-rank batch norm"):
        Trainer(nets, Adam(1e-3), comm=DataParallel(_OneRank(), sync_batchnorm=True), progress=False)
