"""One training run for tests/train/test_distributed.py: ``mpiexec -n N python tests/mpi_worker.py ...`` (data-parallel
over MPI) or plain ``python tests/mpi_worker.py ...`` (one process, the reference).

Rank 0 writes the trained params, buffers and loss history to ``--out``. ``--ghost N`` makes the one-process
reference compute each global batch as N ranks would (batch norm over each rank's rows, gradients averaged):
what N ranks with per-rank batch norm must equal. With ``--sync-bn`` the ranks' batch norm uses the global batch's
statistics, so they must equal one plain process. ``--model flagship``: a small instance of
examples/reseg_classifier.py's network (conv + batch norm + two SpatialRNN blocks, a dropout layer added).
``--kill-at S`` / ``--signal-at S``: rank 1 sends itself SIGKILL / SIGINT at global step S.
"""
import argparse
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paths import EXAMPLES, REPO  # noqa: E402

sys.path.insert(0, str(REPO))

import rnnc as rc  # noqa: E402
import rnnc.nn as nn  # noqa: E402
from rnnc import t  # noqa: E402
from rnnc.train import Adam, GradientDescentMomentum, Trainer  # noqa: E402
from rnnc.train.distributed import DataParallel, _local_unbiased  # noqa: E402
from rnnc.train.engine import Step  # noqa: E402
from rnnc.train.sampler import split  # noqa: E402


def elman():
    m = rc.Model("elman")
    x = m.input("x", 8)
    y = m.input("y", (), dtype="int64")
    U, W, V = m.param("U", (12, 8)), m.param("W", (12, 12)), m.param("V", (4, 12))
    b, c = m.param("b", 12, init="zeros"), m.param("c", 4, init="zeros")
    h = m.signal("h", 12)
    h[t] = rc.tanh(U @ x[t] + W @ h[t - 1] + b)
    o = V @ h[t] + c
    m.output("o", o)
    m.loss(rc.softmax_cross_entropy(o, y[t]))
    return m


def flagship():
    """examples/reseg_classifier.py's network at widths 2 and 32 x 32 images (four convs with batch norm, three
    max-pools, two SpatialRNN blocks, the 1x1 conv and global pooling), with dropout before the 1x1 conv."""
    sys.path.insert(0, str(EXAMPLES))
    from reseg_classifier import build_model

    clf = build_model((1, 32, 32), 3, widths=(2, 2, 3, 3), hidden=(2, 3), divisor=1.0, name="reseg_small")
    layers = clf.layers[:-3] + (nn.Dropout(0.2),) + clf.layers[-3:]
    return nn.Classifier(layers, clf.input_shape, clf.name)


def model_and_data(kind):
    rng = np.random.default_rng(7)
    if kind == "flagship":
        n = 14
        X = rng.standard_normal((n, 1, 32, 32))
        y = (X[:, 0, :16].mean((1, 2)) > X[:, 0, 16:].mean((1, 2))).astype(int) + (X[:, 0, :, :16].mean((1, 2)) > 0)
        return flagship(), {"x": X, "y": y}, 6, GradientDescentMomentum(0.05, 0.9, 0.0005), "compiled"
    if kind == "dsl":
        n = 24
        x = rng.standard_normal((5, n, 8))
        y = (x[..., :4].sum(-1) > x[..., 4:].sum(-1)).astype(np.int64) + 2 * (x[..., 0] > 0)
        return elman(), {"x": x, "y": y}, 7, Adam(0.01), "compiled"
    n = 40
    X = rng.standard_normal((n, 1, 6, 6))
    y = (X[:, 0, :3].mean((1, 2)) > X[:, 0, 3:].mean((1, 2))).astype(int)
    clf = nn.Classifier((nn.Conv2d(3, 3, padding=1, activation="relu"), nn.BatchNorm(), nn.MaxPool2d(2),
                         nn.Dropout(0.1), nn.Flatten(), nn.Dense(2), nn.Softmax()), (1, 6, 6))
    return clf, {"x": X, "y": y}, 9, GradientDescentMomentum(0.05, 0.9, 0.0005), "interpret"


class Ghost:
    """One process computing a global batch as ``ranks`` ranks do (each part's own batch statistics)."""

    def __init__(self, inner, ranks, trainer):
        self.inner, self.ranks, self.tr = inner, ranks, trainer
        self.name = inner.name

    def loss_and_grad(self, batch, params):
        graph = self.tr.metrics.graph
        size = next(v.shape[len(graph.inputs[k].axes)] for k, v in batch.items())
        steps, counts = [], []
        for part in split(size, self.ranks):
            sub = {k: np.take(v, np.arange(part.start, part.stop), axis=len(graph.inputs[k].axes))
                   for k, v in batch.items()}
            steps.append(self.inner.loss_and_grad(sub, params))
            counts.append(part.stop - part.start)
        grads = {k: sum(n * s.grads[k] for n, s in zip(counts, steps)) / size for k in steps[0].grads}
        loss = sum(n * s.loss for n, s in zip(counts, steps)) / size
        stats = {spec.stat for spec in self.tr.train_net.buffers.values()}
        outputs = {k: np.concatenate([s.outputs[k] for s in steps], axis=len(graph.outputs[k].axes))
                   for k in steps[0].outputs if k not in stats}
        outputs.update({k: steps[0].outputs[k] for k in stats})
        outputs.update(_local_unbiased(self.tr.train_net.buffers, steps[0].outputs, counts[0], size))
        return Step(loss, grads, outputs)

    def forward(self, batch, params):
        return self.inner.forward(batch, params)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="dsl", choices=("dsl", "bn", "flagship"))
    p.add_argument("--dtype", default="float64")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--ckpt")
    p.add_argument("--resume")
    p.add_argument("--ghost", type=int, default=0)
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--kill-at", type=int, default=-1)
    p.add_argument("--signal-at", type=int, default=-1)
    p.add_argument("--diverge", action="store_true", help="rank 1 starts from other params")
    p.add_argument("--no-overlap", action="store_true", help="reduce the gradients after the backward pass")
    a = p.parse_args()

    comm = None
    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ:
        from mpi4py import MPI

        comm = DataParallel(MPI.COMM_WORLD, sync_batchnorm=a.sync_bn, check_every=2, overlap=not a.no_overlap,
                            bucket_bytes=256)       # several buckets even for these small models
    rank = comm.rank if comm else 0
    model, data, batch, opt, engine = model_and_data(a.model)
    if a.sync_bn and comm is None:      # one process with the synchronised network: its collectives are identities
        model = (model.build(train=True, sync_batchnorm=True), model.build(train=False))
    calls = [0]

    def every_step(b, rng):   # an "augment" that returns the batch as it is: a hook at every global step
        calls[0] += 1
        if rank == 1 and calls[0] == a.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if rank == 1 and calls[0] == a.signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        return b

    tr = Trainer(model, opt, batch_size=batch, seed=3, dtype=a.dtype, engine=engine, checkpoint=a.ckpt,
                 progress=False, augment=every_step, comm=comm)
    if a.diverge and rank == 1:
        tr.params["W"] += 1e-12
    if a.ghost:
        tr.engine = Ghost(tr.engine, a.ghost, tr)
    if a.resume:
        tr.resume(a.resume)
    try:
        tr.fit(data, epochs=a.epochs)
    except KeyboardInterrupt as e:
        print(f"rank {rank}: {e}", flush=True)
    if comm is not None:
        comm.check_params(tr.params)
    if rank == 0:
        np.savez(a.out, **{f"param/{k}": v for k, v in tr.params.items()},
                 **{f"buffer/{k}": v for k, v in tr.buffers.items()},
                 loss=np.array([h["loss"] for h in tr.history]), epoch=tr.epoch, batch_index=tr.batch_index,
                 overlapped=comm.overlapped if comm else 0)


if __name__ == "__main__":
    main()
