"""``Trainer``: shuffled mini-batches, epochs, evaluation, progress, history and exact resumption.

It trains any :class:`~rnnc.Model` with a loss (``Trainer(m, Adam())``), an :class:`~rnnc.nn.Network`, a
``(train_net, eval_net)`` pair or a :class:`~rnnc.nn.Classifier`. Besides the loss it reports the metric that
follows the loss (:mod:`rnnc.train.metrics`): accuracy for classification losses, MSE for ``mse``. A compiled
engine is compiled before the first batch ("compiling N stages... 4.2 s"), so epoch times and samples/s count
training only.

Determinism: epoch ``e`` shuffles with ``default_rng([seed, e])`` and draws dropout masks from
``default_rng([seed, e, 1])``, so a run resumed from a checkpoint (saved at the end of every epoch and when
SIGINT/SIGTERM stop ``fit``, always between two steps: :mod:`rnnc.train.interrupts`) repeats the same
arithmetic bit for bit.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from rnnc.interpret.boundary import check_data
from rnnc.train.checkpoint import CheckpointError, atomic_savez, load_checkpoint
from rnnc.train.distributed import data_parallel
from rnnc.train.engine import make_engine
from rnnc.train.interrupts import DeferredInterrupts
from rnnc.train.metrics import Metrics
from rnnc.train.optim import clip_global_norm


def _nets(model, sync_batchnorm: bool = False):
    """``(train_net, eval_net)``: a Model's or a Network's own network twice, a Classifier's two builds (the
    training one with synchronised batch norm when asked, see :class:`~rnnc.train.distributed.DataParallel`)."""
    from rnnc.dsl.model import Model
    from rnnc.nn.base import Network, network

    if isinstance(model, tuple):
        nets = model
    elif isinstance(model, (Network, Model)):
        net = network(model)            # a plain Model: the network its layers registered, or a new one
        nets = (net, net)
    elif callable(getattr(model, "build", None)):
        train = model.build(train=True, sync_batchnorm=True) if sync_batchnorm else model.build(train=True)
        nets = (train, model.build(train=False))
    else:
        raise TypeError(f"Trainer trains an rc.Model with a loss, an nn.Network or an nn.Classifier, "
                        f"got {type(model).__name__}")
    for net in nets:
        if net.model.graph.loss is None:
            raise ValueError(f"model {net.model.name!r} has no loss to train: add one with m.loss(...)")
    if sync_batchnorm and nets[0].buffers and not _collective(nets[0].model.graph):
        raise ValueError(f"sync_batchnorm=True: the network of {nets[0].model.name!r} was built with per-rank "
                         f"batch norm; pass an nn.Classifier (the Trainer builds it) or build the network with "
                         f"nn.Network(m, sync_batchnorm=True)")
    return nets


def _collective(graph) -> bool:
    """Does ``graph`` reduce across ranks inside its kernel (:mod:`rnnc.ops.collective`)?"""
    from rnnc.ops.registry import ops_with

    collective = ops_with(collective=True)
    return any(n.op in collective for n in graph.nodes)


class Trainer:
    """Train an :class:`~rnnc.Model` with a loss, a :class:`~rnnc.nn.Classifier` or a ``(train_net, eval_net)``
    pair of :class:`~rnnc.nn.Network`.

    The data is a dict of arrays named after the model's inputs, laid out as a call's inputs with every sample
    on the batch axis: ``(T, B, ...)`` for a sequence input, ``(B,)`` for ``<name>_lengths``, ``(B, ...)``
    for a per-sample input.

    Parameters
    ----------
    model : Model, Classifier, Network or (Network, Network)
    optimizer : GradientDescentMomentum, Adam, ...
    batch_size, seed, dtype : mini-batch size, the seed of everything random, float32 / float64.
    schedule : callable ``(base_lr, epoch, frac) -> lr`` (StepLR, CosineLR) or None.
    clip : global-norm clipping threshold or None.
    checkpoint : path of the checkpoint written every epoch and when Ctrl-C (SIGINT) or SIGTERM stops ``fit``
        (at the next safe point between steps), or None.
    engine : "auto", "interpret" or "compiled" (see :mod:`rnnc.train.engine`).
    augment : callable ``(batch, rng) -> batch`` applied to each training batch (e.g.
        :class:`~rnnc.train.augment.FlipShift`), ``rng`` seeded by (seed, epoch, batch index), or None.
    check_finite : refuse NaN / Inf in the data (checked once by :meth:`fit`) and in the params before every
        step (``InputError`` naming them); class labels and lengths are range-checked over the whole data set
        before training either way.
    truncate : (k1, k2) or None
        Truncated BPTT (``rc.grad(m, truncate=(k1, k2))``, see ``docs/bptt.md``); None: full BPTT.
    progress : show a progress bar per epoch and the compile time of a compiled engine (on stderr).
    comm : an mpi4py communicator (``MPI.COMM_WORLD``) or a :class:`~rnnc.train.distributed.DataParallel`: train
        data-parallel over its ranks (``docs/distributed.md``); the results equal one process's with the same
        ``batch_size`` (the global batch). Progress from rank 0 only; rank 0 writes the checkpoints.
    """

    def __init__(self, model, optimizer, batch_size: int = 32, seed: int = 0, dtype: str = "float32",
                 schedule=None, clip: float | None = None, checkpoint: str | None = None, engine: str = "auto",
                 progress: bool = True, params: dict | None = None, augment=None, check_finite: bool = True,
                 truncate: tuple | None = None, comm=None):
        self.model = model
        self.parallel = data_parallel(comm)     # None: one process (rnnc.train.distributed)
        self.train_net, self.eval_net = _nets(model, self.parallel is not None and self.parallel.sync_batchnorm)
        if self.parallel is not None:
            self.parallel.collectives = _collective(self.train_net.model.graph)
        self.optimizer, self.batch_size, self.seed, self.dtype = optimizer, int(batch_size), int(seed), dtype
        self.schedule, self.clip, self.checkpoint, self.progress = schedule, clip, checkpoint, progress
        self.augment = augment
        self.check_finite = check_finite
        finite = "params" if check_finite else False     # the data: once, in fit()
        self.metrics = Metrics(self.train_net.model.graph)          # the graph plus the predictions it reads
        self.eval_metrics = Metrics(self.eval_net.model.graph)
        options = {"truncate": tuple(truncate)} if truncate is not None else {}
        self.engine = make_engine(self.metrics.graph, engine, dtype, finite, **options)
        self.eval_engine = make_engine(self.eval_metrics.graph, "interpret" if engine == "interpret" else engine,
                                       dtype, finite)
        self.params = params if params is not None else self.train_net.model.init_params(seed, dtype)
        self.buffers = {k: np.full(b.shape, b.init, dtype=dtype) for k, b in self.train_net.buffers.items()}
        self.history: list[dict] = []
        self.epoch, self.batch_index = 0, 0
        self._partial = _no_sums()
        self._interrupts, self._source = DeferredInterrupts(), None   # SIGINT/SIGTERM; the file resumed from
        self._compiled = False              # compiled before the first batch (see _compile)
        self.progress = progress and (self.parallel is None or self.parallel.is_root)

    # ------------------------------------------------------------------ data
    def _batch_dim(self, name: str, graph) -> int:
        return len(graph.inputs[name].axes)

    def _take(self, data: dict, idx, graph) -> dict:
        return {k: np.take(v, idx, axis=self._batch_dim(k, graph)) for k, v in data.items() if k in graph.inputs}

    def _count(self, data: dict, graph) -> int:
        name = next(k for k in data if k in graph.inputs)
        return data[name].shape[self._batch_dim(name, graph)]

    def _noise(self, batch: dict, rng) -> dict:
        graph = self.train_net.model.graph
        sizes = {}
        for k, v in batch.items():
            for pos, a in enumerate(graph.inputs[k].axes):
                sizes[a.name] = v.shape[pos]
            b = v.shape[len(graph.inputs[k].axes)]
        out = {}
        for name, p in sorted(self.train_net.noise.items()):
            node = graph.inputs[name]
            shape = tuple(sizes[a.name] for a in node.axes) + (b,) + node.shape
            out[name] = (rng.random(shape) >= p).astype(self.dtype) / np.asarray(1.0 - p, dtype=self.dtype)
        return out

    # ------------------------------------------------------------------ training
    def fit(self, data: dict, epochs: int, val: dict | None = None) -> list[dict]:
        """Train until ``epochs`` epochs are done (counting those restored by :meth:`resume`); returns history."""
        check_data(self.train_net.model.graph, data, self.check_finite)     # bad labels: refused before step 1
        if val is not None:
            check_data(self.eval_net.model.graph, val, self.check_finite)
        self._refuse_if_torn()
        self._compile(data, val)      # before the signal handlers: Ctrl-C during a long compile stops at once
        with self._interrupts:   # SIGINT/SIGTERM wait for the next safe point (rnnc.train.interrupts)
            while self.epoch < epochs:
                self._run_epoch(data, epochs, val)
                self._safe_point()
        self._safe_point()   # a signal after the last safe point, before the previous handlers came back
        return self.history

    def _compile(self, data, val):
        """Run a compiled engine once on the first samples (parameters untouched) so that Numba compiles, or
        loads its cache, before the first timed batch; say so, with the time it took, when ``progress``."""
        if self._compiled or self.engine.name != "compiled":
            return
        from rnnc.schedule import schedule

        graph = self.train_net.model.graph
        stages = len(schedule(graph))
        _say(f"compiling {stages} stage{'s' * (stages != 1)} of {graph.name!r} (forward and gradient)... ",
             self.progress)
        t0 = time.perf_counter()
        batch = self._take(data, np.arange(min(self.batch_size, self._count(data, graph))), graph)
        batch.update(self._noise(batch, np.random.default_rng(0)))       # its own masks: the run's stay as they are
        self.engine.loss_and_grad(batch, self.params)
        if val is not None and self.eval_engine.name == "compiled":
            eval_graph = self.eval_net.model.graph
            small = np.arange(min(self.batch_size, self._count(val, eval_graph)))
            self.eval_engine.forward(self._take(val, small, eval_graph), self.eval_params())
        self._compiled = True
        _say(f"{time.perf_counter() - t0:.1f} s{_processes(self.engine)}\n", self.progress)

    def _safe_point(self):
        """Between two steps: if a signal came, save the checkpoint (if one is configured) and stop."""
        name = self._interrupts.take()
        if self.parallel is not None:     # every rank stops at the same step, or none does
            name = self.parallel.agree(name)
        if name is None:
            return
        where = f"epoch {self.epoch + 1}, {self.batch_index} batches done"
        if self.checkpoint:
            self.save_checkpoint(self.checkpoint)
            raise KeyboardInterrupt(f"{name}: stopped between two steps ({where}); checkpoint saved to "
                                    f"{self.checkpoint}")
        raise KeyboardInterrupt(f"{name}: stopped between two steps ({where}); no checkpoint= to save to")

    def _refuse_if_torn(self):
        if self._interrupts.forced:
            raise RuntimeError("this Trainer was stopped in the middle of a step (a second interrupt), so its "
                               "state is not consistent; resume it from its last checkpoint")

    def _check_position(self, n, batches):
        """A resumed position must lie inside this data's epoch: fewer batches done than it has."""
        seen = min(self.batch_index * self.batch_size, n)
        source = self._source or "the trainer's state"
        if self.batch_index >= batches:
            raise CheckpointError(f"{source}: field batch_index: expected an integer in [0, {batches - 1}] "
                                  f"({n} samples in batches of {self.batch_size}), got {self.batch_index}")
        if self._partial["seen"] != seen:
            raise CheckpointError(f"{source}: field partial.seen: expected {seen} ({self.batch_index} batches "
                                  f"done of {n} samples), got {self._partial['seen']}")

    def _run_epoch(self, data, epochs, val):
        graph = self.train_net.model.graph
        n = self._count(data, graph)
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        noise_rng = np.random.default_rng([self.seed, self.epoch, 1])
        starts = list(range(0, n, self.batch_size))
        self._check_position(n, len(starts))
        for k in range(self.batch_index):   # replay the noise already drawn this epoch
            self._noise(self._take(data, perm[starts[k]:starts[k] + self.batch_size], graph), noise_rng)
        bar = _bar(len(starts), self.batch_index, f"epoch {self.epoch + 1}/{epochs}", self.progress)
        t0, seen0 = time.perf_counter(), self._partial["seen"]
        while self.batch_index < len(starts):
            self._safe_point()
            s = starts[self.batch_index]
            idx = perm[s:s + self.batch_size]
            batch = self._take(data, idx, graph)
            if self.augment is not None:
                batch = self.augment(batch, np.random.default_rng([self.seed, self.epoch, 2, self.batch_index]))
            batch.update(self._noise(batch, noise_rng))
            if self.parallel is not None:     # this rank's rows; the random draws above are the global batch's
                batch = self.parallel.local(batch, len(idx), lambda k: self._batch_dim(k, graph))
            self._step(batch, len(idx), self.batch_index / len(starts))
            self.batch_index += 1
            rate = (self._partial["seen"] - seen0) / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{self._partial['loss'] / self._partial['seen']:.4f}", samples_s=f"{rate:.0f}")
        bar.close()
        self._end_epoch(val, time.perf_counter() - t0, self._partial["seen"] - seen0)

    def _step(self, batch, size, frac):
        if self.parallel is None:
            step = self.engine.loss_and_grad(batch, self.params)
            hit, count = self.metrics.sums(step.outputs, batch)
        else:       # the global batch's loss, gradient and metric sums, from every rank's rows
            step, hit, count = self.parallel.step(self.engine, batch, size, self.params, self.metrics,
                                                  self.train_net.buffers)
        grads, norm = clip_global_norm(step.grads, self.clip)
        lr = self.schedule(self.optimizer.lr, self.epoch, frac) if self.schedule else None
        self.optimizer.step(self.params, grads, lr)
        self._update_buffers(step.outputs, size)
        self._partial["loss"] += float(step.loss) * size
        self._partial["seen"] += size
        _add_hits(self._partial, self.metrics, hit, count)

    def _update_buffers(self, outputs, batch_size):
        for name, spec in self.train_net.buffers.items():
            stat = np.asarray(outputs[spec.stat], dtype=self.dtype)
            if spec.unbiased:
                count = batch_size * spec.per_sample
                stat = stat * (count / max(count - 1, 1))
            self.buffers[name] = ((1 - spec.momentum) * self.buffers[name] + spec.momentum * stat).astype(self.dtype)

    def _end_epoch(self, val, seconds, timed):
        """The epoch's row: loss and metric over the epoch, ``seconds`` of training (steps only: no compile, no
        validation) and ``samples_s`` over the samples trained in them (this session's part of a resumed epoch)."""
        p = self._partial
        row = {"epoch": self.epoch + 1, "loss": p["loss"] / max(p["seen"], 1), **_metric_row(p, self.metrics),
               "seconds": seconds, "samples_s": timed / max(seconds, 1e-9)}
        if val is not None:
            row.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
        self.history.append(row)
        self.epoch, self.batch_index = self.epoch + 1, 0
        self._partial = _no_sums()
        if self.checkpoint:
            self.save_checkpoint(self.checkpoint)

    # ------------------------------------------------------------------ evaluation
    def eval_params(self) -> dict:
        return {**self.params, **self.buffers}

    def forward(self, data: dict, batch_size: int | None = None) -> dict:
        """Every output of the model for every sample (evaluation mode: running statistics, no dropout), each
        laid out like the data, samples on the batch axis."""
        return self._eval(data, batch_size)[0]

    def predict(self, data: dict, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities of every sample: the ``probs`` output (see :meth:`forward` for any output)."""
        outputs = self.forward(data, batch_size)
        if "probs" not in outputs:
            raise ValueError(f"model {self.eval_net.model.name!r} has no output 'probs' (its outputs: "
                             f"{', '.join(outputs) or 'none'}); Trainer.forward(data) returns all of them")
        return outputs["probs"]

    def evaluate(self, data: dict, batch_size: int | None = None) -> dict:
        """Mean loss over ``data`` in evaluation mode, and the metric that follows the loss (``accuracy`` or
        ``mse``, see :mod:`rnnc.train.metrics`)."""
        _, sums = self._eval(data, batch_size)
        if sums is None:
            graph = self.eval_net.model.graph
            missing = sorted(k for k in graph.inputs if k not in data)
            raise ValueError(f"evaluate: the loss of model {graph.name!r} reads inputs the data lacks: "
                             f"{', '.join(missing)}")
        return {"loss": sums["loss"] / max(sums["seen"], 1), **_metric_row(sums, self.eval_metrics)}

    def _eval(self, data, batch_size):
        """``(outputs, sums)`` over ``data`` in batches; ``sums`` None when the loss could not be computed."""
        graph = self.eval_net.model.graph
        n, bs = self._count(data, graph), batch_size or max(self.batch_size, 256)
        parts: dict = {name: [] for name in graph.outputs}
        sums = _no_sums()
        for s in range(0, n, bs):
            idx = np.arange(s, min(s + bs, n))
            batch = self._take(data, idx, graph)
            out = self.eval_engine.forward(batch, self.eval_params())
            for name in parts:
                parts[name].append(out[name])
            if sums is not None and out.get("loss") is not None:
                sums["loss"] += float(out["loss"]) * len(idx)
                sums["seen"] += len(idx)
                _add_sums(sums, self.eval_metrics, out, batch)
            else:
                sums = None
        outputs = {name: np.concatenate(arrs, axis=len(graph.outputs[name].axes)) if graph.outputs[name].batched
                   else arrs[0] for name, arrs in parts.items()}
        return outputs, sums

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str) -> None:
        """Write params, buffers, optimizer state, position (epoch, batch) and history atomically. A signal
        during the write waits for it to finish (inside :meth:`fit`)."""
        self._refuse_if_torn()
        arrays = {**{f"param/{k}": v for k, v in self.params.items()},
                  **{f"buffer/{k}": v for k, v in self.buffers.items()},
                  **{f"optim/{k}": np.asarray(v) for k, v in self.optimizer.state_dict().items()}}
        meta = {"epoch": self.epoch, "batch_index": self.batch_index, "seed": self.seed, "dtype": self.dtype,
                "batch_size": self.batch_size, "history": self.history, "partial": self._partial,
                "optimizer": type(self.optimizer).__name__, "spec": _spec(self.model)}
        with self._interrupts.saving():
            if self.parallel is None:
                atomic_savez(path, arrays, meta, "rnnc-checkpoint")
            else:   # rank 0 writes, the others wait for it (collective: every rank saves at the same point)
                self.parallel.save(lambda: atomic_savez(path, arrays, meta, "rnnc-checkpoint"))

    def resume(self, path: str) -> Trainer:
        """Restore a checkpoint written by this trainer's configuration; :meth:`fit` then continues exactly."""
        config = {"seed": self.seed, "dtype": self.dtype, "batch_size": self.batch_size,
                  "optimizer": type(self.optimizer).__name__, "spec": _spec(self.model)}
        params, buffers, state, meta = load_checkpoint(path, self.params, self.buffers, self.optimizer, config)
        self.params, self.buffers = params, buffers
        self.optimizer.load_state_dict(state)
        self.epoch, self.batch_index = meta["epoch"], meta["batch_index"]
        self.history, self._partial = list(meta["history"]), dict(meta["partial"])
        self._source, self._interrupts.forced = path, False
        return self


def _spec(model):
    return model.spec() if hasattr(model, "spec") else None


def _no_sums() -> dict:
    """An epoch's running sums: loss x samples, samples, and the metric's numerator (``correct`` predictions
    or ``sq``, squared errors) over ``count`` predictions or elements (:mod:`rnnc.train.metrics`)."""
    return {"loss": 0.0, "seen": 0, "correct": 0, "sq": 0.0, "count": 0}


def _add_sums(sums: dict, metrics: Metrics, outputs: dict, batch: dict) -> None:
    _add_hits(sums, metrics, *metrics.sums(outputs, batch))


def _add_hits(sums: dict, metrics: Metrics, hit, count: int) -> None:
    sums["correct" if metrics.kind == "accuracy" else "sq"] += hit
    sums["count"] += count


def _metric_row(sums: dict, metrics: Metrics) -> dict:
    return metrics.row(sums["correct"] if metrics.kind == "accuracy" else sums["sq"], sums["count"])


def _processes(engine) -> str:
    """`` (N functions on W processes)`` when a compiled engine's CPU kernel, built by its first step, compiled
    on several processes (nothing is built here: a CUDA engine has no such kernel). An engine wrapped by
    another (an AutoEngine's ``impl``, a logging wrapper's ``engine``) is looked into, a few levels deep."""
    for _ in range(4):
        if hasattr(engine, "_kernel"):
            break
        engine = getattr(engine, "impl", None) or getattr(engine, "engine", None)
    kernel = getattr(engine, "_kernel", None)
    done = getattr(kernel, "stats", {}).get("precompile", {})
    return f" ({done['jobs']} functions on {done['workers']} processes)" if done.get("workers", 1) > 1 else ""


def _say(text: str, enabled: bool) -> None:
    if enabled:
        print(text, end="", file=sys.stderr, flush=True)


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _bar(total, initial, desc, enabled):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=True)
