"""``Trainer``: shuffled mini-batches, epochs, evaluation, progress, history and exact resumption.

Determinism: epoch ``e`` shuffles with ``default_rng([seed, e])`` and draws dropout masks from
``default_rng([seed, e, 1])``, so a run resumed from a checkpoint (saved at the end of every epoch and when
SIGINT/SIGTERM stop ``fit``, always between two steps: :mod:`rnnc.train.interrupts`) repeats the same
arithmetic bit for bit.
"""
from __future__ import annotations

import time

import numpy as np

from rnnc.interpret.boundary import check_data
from rnnc.train.checkpoint import CheckpointError, atomic_savez, load_checkpoint
from rnnc.train.engine import make_engine
from rnnc.train.interrupts import DeferredInterrupts
from rnnc.train.optim import clip_global_norm


def _nets(model):
    from rnnc.nn.base import Network

    if isinstance(model, tuple):
        return model
    if isinstance(model, Network):
        return model, model
    return model.build(train=True), model.build(train=False)


class Trainer:
    """Train a :class:`~rnnc.nn.Classifier` (or a ``(train_net, eval_net)`` pair of :class:`~rnnc.nn.Network`).

    Parameters
    ----------
    model : Classifier, Network or (Network, Network)
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
    """

    def __init__(self, model, optimizer, batch_size: int = 32, seed: int = 0, dtype: str = "float32",
                 schedule=None, clip: float | None = None, checkpoint: str | None = None, engine: str = "auto",
                 progress: bool = True, params: dict | None = None, augment=None, check_finite: bool = True):
        self.model = model
        self.train_net, self.eval_net = _nets(model)
        self.optimizer, self.batch_size, self.seed, self.dtype = optimizer, int(batch_size), int(seed), dtype
        self.schedule, self.clip, self.checkpoint, self.progress = schedule, clip, checkpoint, progress
        self.augment = augment
        self.check_finite = check_finite
        finite = "params" if check_finite else False     # the data: once, in fit()
        self.engine = make_engine(self.train_net.model, engine, dtype, finite)
        self.eval_engine = make_engine(self.eval_net.model, "interpret" if engine == "interpret" else engine, dtype,
                                       finite)
        self.params = params if params is not None else self.train_net.model.init_params(seed, dtype)
        self.buffers = {k: np.full(b.shape, b.init, dtype=dtype) for k, b in self.train_net.buffers.items()}
        self.history: list[dict] = []
        self.epoch, self.batch_index = 0, 0
        self._partial = {"loss": 0.0, "correct": 0, "seen": 0}
        self._interrupts, self._source = DeferredInterrupts(), None   # SIGINT/SIGTERM; the file resumed from

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
        with self._interrupts:   # SIGINT/SIGTERM wait for the next safe point (rnnc.train.interrupts)
            while self.epoch < epochs:
                self._run_epoch(data, epochs, val)
                self._safe_point()
        self._safe_point()   # a signal after the last safe point, before the previous handlers came back
        return self.history

    def _safe_point(self):
        """Between two steps: if a signal came, save the checkpoint (if one is configured) and stop."""
        name = self._interrupts.take()
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
            self._step(batch, len(idx), self.batch_index / len(starts))
            self.batch_index += 1
            rate = (self._partial["seen"] - seen0) / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{self._partial['loss'] / self._partial['seen']:.4f}", samples_s=f"{rate:.0f}")
        bar.close()
        self._end_epoch(val, time.perf_counter() - t0)

    def _step(self, batch, size, frac):
        step = self.engine.loss_and_grad(batch, self.params)
        grads, norm = clip_global_norm(step.grads, self.clip)
        lr = self.schedule(self.optimizer.lr, self.epoch, frac) if self.schedule else None
        self.optimizer.step(self.params, grads, lr)
        self._update_buffers(step.outputs, size)
        self._partial["loss"] += float(step.loss) * size
        self._partial["seen"] += size
        if "probs" in step.outputs and "y" in batch:
            self._partial["correct"] += int((step.outputs["probs"].argmax(-1) == batch["y"]).sum())

    def _update_buffers(self, outputs, batch_size):
        for name, spec in self.train_net.buffers.items():
            stat = np.asarray(outputs[spec.stat], dtype=self.dtype)
            if spec.unbiased:
                count = batch_size * spec.per_sample
                stat = stat * (count / max(count - 1, 1))
            self.buffers[name] = ((1 - spec.momentum) * self.buffers[name] + spec.momentum * stat).astype(self.dtype)

    def _end_epoch(self, val, seconds):
        p = self._partial
        row = {"epoch": self.epoch + 1, "loss": p["loss"] / max(p["seen"], 1),
               "accuracy": p["correct"] / max(p["seen"], 1), "seconds": seconds}
        if val is not None:
            row.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
        self.history.append(row)
        self.epoch, self.batch_index = self.epoch + 1, 0
        self._partial = {"loss": 0.0, "correct": 0, "seen": 0}
        if self.checkpoint:
            self.save_checkpoint(self.checkpoint)

    # ------------------------------------------------------------------ evaluation
    def eval_params(self) -> dict:
        return {**self.params, **self.buffers}

    def predict(self, data: dict, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities of every sample (evaluation mode: running statistics, no dropout)."""
        return self._eval(data, batch_size)[0]

    def evaluate(self, data: dict, batch_size: int | None = None) -> dict:
        """Mean loss and accuracy over ``data`` in evaluation mode."""
        probs, loss = self._eval(data, batch_size)
        out = {"loss": loss}
        if "y" in data:
            out["accuracy"] = float((probs.argmax(-1) == data["y"]).mean())
        return out

    def _eval(self, data, batch_size):
        graph = self.eval_net.model.graph
        n, bs = self._count(data, graph), batch_size or max(self.batch_size, 256)
        probs, total = [], 0.0
        for s in range(0, n, bs):
            idx = np.arange(s, min(s + bs, n))
            out = self.eval_engine.forward(self._take(data, idx, graph), self.eval_params())
            probs.append(out["probs"])
            total += float(out["loss"] or 0.0) * len(idx)
        return np.concatenate(probs), total / n

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
            atomic_savez(path, arrays, meta, "rnnc-checkpoint")

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
