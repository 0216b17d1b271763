"""Data-parallel training over MPI: ``Trainer(..., comm=MPI.COMM_WORLD)`` run by ``mpiexec -n N``.

Every rank holds the whole model and the same parameters. Each global batch of ``batch_size`` rows (the batch one
process would train on, :mod:`rnnc.train.sampler`) is cut into ``N`` contiguous parts; rank ``r`` computes the
loss and gradient of its ``n_r`` rows with the compiled kernel, and one ``Allreduce`` makes every rank's
gradient the global batch's:

.. math:: g = \\frac{1}{n} \\sum_r n_r\\, g_r,\\qquad n = \\sum_r n_r

(rnnc's losses are means over the batch, so ``n_r g_r`` is the sum of rank ``r``'s per-sample gradients and the
weighted sum is exactly the single-process gradient, also when ``n`` does not split evenly). Every rank then
applies the same optimizer step to the same numbers, so parameters stay identical; a checksum gathered every
``check_every`` steps proves it (:class:`DivergedError` naming the ranks otherwise).

The gradients travel in one flat buffer cut into buckets of about ``bucket_bytes``, the parameters ordered by
when the backward pass completes their gradients (rank 0's first step, broadcast, as PyTorch DDP's buckets in
reverse order of use). The compiled CPU kernel announces each gradient as soon as the stage that last writes it
has run (:func:`rnnc.ops.collective.across_ranks`'s ``ready`` hook); its scaled copy goes into the bucket, and a
bucket's non-blocking ``Iallreduce`` starts as soon as all its gradients are in, so that reduction overlaps the
rest of the backward pass (``overlap=True``, the default). Gradients nobody announced (an interpreted engine)
are packed when the kernel returns.

With ``sync_batchnorm=True`` the network is built with synchronised batch norm (:class:`rnnc.nn.BatchNorm`):
its statistics are reduced *inside* the forward pass, and the matching sums in the backward pass, by the
collective op :func:`rnnc.ops.collective.cross_rank_mean`, which this class executes (an ``Allreduce`` of
:math:`(n_r / n)\\, x_r`) through the same hooks.

The same step reduces, in a small float64 buffer, the loss and metric sums (history and progress are the global
batch's, and samples/s counts every rank) and the signals that stop training.
"""
from __future__ import annotations

import contextlib
import time
import zlib

import numpy as np

from rnnc.ops.collective import across_ranks
from rnnc.train.engine import Step
from rnnc.train.sampler import split

_SIGNALS = ("SIGINT", "SIGTERM")


class DivergedError(RuntimeError):
    """The parameters are no longer the same on every rank."""


class DataParallel:
    """How a :class:`~rnnc.train.Trainer` shares its work with the other ranks of an MPI communicator.

    Parameters
    ----------
    comm : mpi4py communicator (``MPI.COMM_WORLD``).
    sync_batchnorm : bool
        False (default): each rank normalises with the batch-norm statistics of its own rows and its running
        statistics follow them (as PyTorch's ``BatchNorm`` under ``DistributedDataParallel``); rank 0's are saved.
        True (as PyTorch's ``SyncBatchNorm``): the :class:`~rnnc.train.Trainer` builds the network with
        synchronised batch norm (``Classifier.build(sync_batchnorm=True)``), whose forward and backward passes use
        the global batch's statistics; every rank needs at least one row of each global batch.
    check_every : int
        Compare a checksum of the parameters across ranks every this many steps (and at the first step).
    bucket_bytes : int
        Size of one gradient bucket (one ``Iallreduce``).
    overlap : bool
        Start each bucket's reduction as soon as the backward pass has completed its gradients (compiled CPU
        kernels); False: when the whole backward pass has ended.

    The trainer calls it at four points: :meth:`local` (this rank's rows of a global batch), :meth:`step` (loss,
    gradient and metric sums of the global batch), :meth:`agree` (stop at a safe point on every rank or none) and
    :meth:`save` (rank 0 writes, the others wait). Those are collective: every rank calls them in the same order.
    """

    def __init__(self, comm, sync_batchnorm: bool = False, check_every: int = 100, bucket_bytes: int = 4 << 20,
                 overlap: bool = True):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.sync_batchnorm, self.check_every, self.bucket_bytes = sync_batchnorm, int(check_every), int(bucket_bytes)
        self.overlap = bool(overlap)
        self.collectives = sync_batchnorm   # the model reduces across ranks inside its kernel (set by the Trainer)
        self.steps = 0
        self.comm_seconds = 0.0       # time spent in the gradient reduction (packing, waiting, unpacking)
        self.overlapped = 0           # buckets whose reduction started before the kernel returned
        self._layout = None
        self._order: list | None = None     # parameter names in the order their gradients complete
        self._seen: list = []               # ... as this rank saw it in its first step
        self._step: dict | None = None      # the packing state of the step under way
        self._signals = np.zeros(len(_SIGNALS))    # signals this rank took since its last step: sent with the next
        self._agreed: str | None = None            # the signal any rank sent with the last step
        if self.size > 1:
            _abort_on_uncaught(comm)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ rows
    def rows(self, size: int) -> slice:
        """This rank's part of a global batch of ``size`` rows (:func:`rnnc.train.sampler.split`)."""
        return split(size, self.size)[self.rank]

    def local(self, batch: dict, size: int, axis_of) -> dict:
        """This rank's rows of every array of a global ``batch`` (``axis_of(name)``: its batch axis)."""
        part = self.rows(size)
        out = {}
        for name, v in batch.items():
            index = [slice(None)] * v.ndim
            index[axis_of(name)] = part
            out[name] = v[tuple(index)]
        return out

    # ------------------------------------------------------------------ one step
    def step(self, engine, batch: dict, size: int, params: dict, metrics, buffers: dict) -> tuple[Step, float, int]:
        """Loss, gradient and metric sums of the global batch of ``size`` rows, from this rank's rows ``batch``.

        Returns ``(step, hit, count)``: ``step.loss`` and ``step.grads`` are the global batch's mean loss and
        gradient, ``step.outputs`` this rank's outputs (under ``sync_batchnorm`` the batch statistics in them are
        already the global batch's, reduced inside the kernel); ``hit, count`` the metric's sums over every rank."""
        if self.steps % self.check_every == 0:
            self.check_params(params)
        self.steps += 1
        mine = self.rows(size).stop - self.rows(size).start
        if self.collectives and size < self.size:
            raise ValueError(f"rnnc.distributed: a global batch of {size} row{'s' * (size != 1)} leaves a rank "
                             f"without rows, and synchronised batch norm needs every rank in its collectives; "
                             f"use a batch size (and a data set size) that gives each of the {self.size} ranks "
                             f"a row")
        self._begin(params, mine)
        if mine:
            with across_ranks(mean=self._mean(mine, size) if self.size > 1 else None,
                              ready=self._ready if self.overlap else None):
                local = engine.loss_and_grad(batch, params)
            hit, count = metrics.sums(local.outputs, batch)
        else:   # a short last batch leaves this rank no rows: it adds zeros to every sum
            local = Step(0.0, {k: np.zeros_like(v) for k, v in params.items()}, {})
            hit, count = 0, 0
        extras = np.array([local.loss * mine, hit, count, *self._signals], dtype=np.float64)
        self._signals[:] = 0
        grads, extras = self._allreduce(local.grads, params, size, extras)
        sent = extras[3:3 + len(_SIGNALS)]
        self._agreed = next((_SIGNALS[i] for i in reversed(range(len(_SIGNALS))) if sent[i] > 0), None)
        outputs = dict(local.outputs)
        if mine and not self.sync_batchnorm:
            outputs.update(_local_unbiased(buffers, outputs, mine, size))
        hit = int(round(extras[1])) if metrics.kind == "accuracy" else float(extras[1])
        return Step(extras[0] / size, grads, outputs), hit, int(round(extras[2]))

    # ------------------------------------------------------------------ the reductions
    def _mean(self, mine: int, size: int):
        """The collective op's reduction on this rank (:func:`rnnc.ops.collective.cross_rank_mean`):
        :math:`\\sum_r (n_r / n)\\, x_r` by one ``Allreduce`` in float64."""
        def reduce(x: np.ndarray) -> np.ndarray:
            t0 = time.perf_counter()
            buf = np.asarray(x, dtype=np.float64) * (mine / size)
            self.comm.Allreduce(_in_place(), buf)
            self.comm_seconds += time.perf_counter() - t0
            return buf
        return reduce

    def _begin(self, params: dict, mine: int) -> None:
        """The packing state of a step: which buckets still wait for which gradients."""
        flat, buckets = self._buffers(params)
        need = [{name for name, *_ in segments} for _, _, segments in buckets]
        self._step = {"mine": mine, "need": need, "packed": set(), "requests": [], "flat": flat,
                      "buckets": buckets}

    def _ready(self, grads: dict) -> None:
        """The kernel's ``ready`` hook: pack these complete gradients, start every bucket (in order) that is
        full, and let MPI progress the reductions under way."""
        t0 = time.perf_counter()
        if self._order is None:
            self._seen += [name for name in grads if name not in self._seen]
        self._pack(grads)
        if self._step["requests"]:
            self.overlapped = max(self.overlapped, len(self._step["requests"]))
            _progress(self._step["requests"])
        self.comm_seconds += time.perf_counter() - t0

    def _pack(self, grads: dict) -> None:
        st = self._step
        flat, mine = st["flat"], st["mine"]
        for name, g in grads.items():
            if name in st["packed"]:
                continue
            st["packed"].add(name)
            for k, (_, _, segments) in enumerate(st["buckets"]):
                for seg_name, a, b, off in segments:
                    if seg_name == name:
                        np.multiply(np.ravel(g)[a - off:b - off], mine, out=flat[a:b])
                        st["need"][k].discard(name)
        while len(st["requests"]) < len(st["buckets"]) and not st["need"][len(st["requests"])]:
            lo, hi, _ = st["buckets"][len(st["requests"])]
            st["requests"].append(self.comm.Iallreduce(_in_place(), flat[lo:hi]))

    def _allreduce(self, grads: dict, params: dict, size: int, extras: np.ndarray):
        """Sum ``mine * grads`` and ``extras`` over the ranks, bucket by bucket (the buckets the kernel's
        ``ready`` hook already started, then the rest); returns (grads / size, extras)."""
        t0 = time.perf_counter()
        st = self._step
        self._pack({name: grads[name] for name in (n for _, _, segs in st["buckets"] for n, *_ in segs)})
        self._step = None
        requests = st["requests"] + [self.comm.Iallreduce(_in_place(), extras)]
        flat = st["flat"]
        out = {name: np.empty(np.shape(p), dtype=flat.dtype) for name, p in params.items()}
        for (_, _, segments), request in zip(st["buckets"], requests):
            request.Wait()
            for name, a, b, off in segments:
                np.divide(flat[a:b], size, out=out[name].reshape(-1)[a - off:b - off])
        requests[-1].Wait()
        if self._order is None and self.overlap:    # buckets in rank 0's order of readiness from now on
            self._order = self.comm.bcast(self._seen if self.is_root else None, root=0)
        self.comm_seconds += time.perf_counter() - t0
        return out, extras

    def _buffers(self, params: dict):
        """The flat gradient buffer and its buckets ``(lo, hi, [(name, a, b, offset of name)])``, built once per
        order: the parameters in their gradients' order of readiness once known, by name before."""
        order = {name: k for k, name in enumerate(self._order or ())}
        names = sorted(params, key=lambda k: (order.get(k, len(order)), k))
        key = tuple((k, np.shape(params[k]), np.asarray(params[k]).dtype.str) for k in names)
        if self._layout is None or self._layout[0] != key:
            dtype = np.result_type(*(np.asarray(v).dtype for v in params.values()))
            sizes = [(k, int(np.prod(shape))) for k, shape, _ in key]
            total = sum(n for _, n in sizes)
            step = max(1, self.bucket_bytes // dtype.itemsize)
            buckets = []
            for lo in range(0, max(total, 1), step):
                hi, segments, off = min(lo + step, total), [], 0
                for name, n in sizes:
                    a, b = max(lo, off), min(hi, off + n)
                    if a < b:
                        segments.append((name, a, b, off))
                    off += n
                buckets.append((lo, hi, segments))
            self._layout = (key, np.zeros(total, dtype=dtype), buckets)
        return self._layout[1], self._layout[2]

    # ------------------------------------------------------------------ checks, stops, saves
    def check_params(self, params: dict) -> None:
        """Gather a CRC-32 of every rank's parameters (names, dtypes, shapes and bytes); raise
        :class:`DivergedError` on every rank, naming the ranks that differ from rank 0, when they are not equal."""
        crc = 0
        for name in sorted(params):
            a = np.ascontiguousarray(params[name])
            crc = zlib.crc32(f"{name}|{a.dtype.str}|{a.shape}|".encode(), crc)
            crc = zlib.crc32(a.data if a.size else b"", crc)
        crcs = self.comm.allgather(crc)
        bad = [r for r, c in enumerate(crcs) if c != crcs[0]]
        if bad:
            raise DivergedError(f"rnnc.distributed: the parameters of rank{'s' * (len(bad) > 1)} "
                                f"{', '.join(map(str, bad))} differ from rank 0's before step {self.steps + 1} "
                                f"(CRC-32 {', '.join(f'{c:08x}' for c in crcs)}, ranks 0..{self.size - 1}); every "
                                f"rank must start from the same parameters (same seed or the same params=)")

    def agree(self, signal: str | None) -> str | None:
        """At a safe point, with the signal this rank took there (or None): the signal that any rank had taken
        before the last step (SIGTERM before SIGINT), the same on every rank, so that every rank stops at the same
        step. No collective of its own: the signals ride in the step's reduction, so a signal stops the job one
        step after the safe point that saw it (a signal after the last step of ``fit`` is dropped: training has
        ended and the epoch's checkpoint is written)."""
        if signal in _SIGNALS:
            self._signals[_SIGNALS.index(signal)] = 1
        agreed, self._agreed = self._agreed, None
        if agreed is not None:
            self._signals[:] = 0
        return agreed

    def save(self, write) -> None:
        """Rank 0 calls ``write()``; every rank returns once it is done, and raises if it failed."""
        error = None
        if self.is_root:
            try:
                write()
            except BaseException as e:
                self.comm.bcast(f"{type(e).__name__}: {e}", root=0)
                raise
        error = self.comm.bcast(error, root=0)
        if error is not None:
            raise RuntimeError(f"rnnc.distributed: rank 0 could not write the checkpoint: {error}")


def _local_unbiased(buffers: dict, outputs: dict, mine: int, size: int) -> dict:
    """Per-rank statistics of ``mine`` rows that the trainer corrects as if they were ``size`` rows'
    (:math:`c = N / (N - 1)`, ``N`` = rows x values per row): pre-scaled by :math:`c(mine) / c(size)` so that
    the running variance is the unbiased variance of this rank's rows."""
    out = {}
    for spec in buffers.values():
        if spec.unbiased:
            here, there = mine * spec.per_sample, size * spec.per_sample
            ratio = (here / max(here - 1, 1)) / (there / max(there - 1, 1))
            out[spec.stat] = np.asarray(outputs[spec.stat]) * ratio
    return out


@contextlib.contextmanager
def abort_on_error(comm):
    """Inside this block an exception on one rank ends the whole job (``MPI_Abort``) after one line naming the
    rank, for callers that catch exceptions themselves (the command line); signals still propagate."""
    try:
        yield
    except Exception as e:
        if comm is None or comm.Get_size() == 1:
            raise
        import sys

        sys.stderr.write(f"rnnc.distributed: rank {comm.Get_rank()}: {type(e).__name__}: {e}; ending the job "
                         f"(MPI_Abort)\n")
        sys.stderr.flush()
        comm.Abort(1)


def _abort_on_uncaught(comm) -> None:
    """An exception that ends one rank's program ends the job: ``MPI_Abort`` after the traceback (as
    ``python -m mpi4py`` does). Without it the other ranks would wait in their next collective for ever, and the
    failing rank in ``MPI_Finalize``."""
    import sys

    previous = sys.excepthook
    if getattr(previous, "rnnc_aborts", False):
        return

    def hook(kind, value, tb):
        previous(kind, value, tb)
        try:
            sys.stderr.write(f"rnnc.distributed: rank {comm.Get_rank()} stopped by {kind.__name__}; ending the job "
                             f"(MPI_Abort)\n")
            sys.stderr.flush()
        finally:
            comm.Abort(1)

    hook.rnnc_aborts = True
    sys.excepthook = hook


def _progress(requests: list) -> None:
    """Let MPI move the reductions under way along (Open MPI progresses a non-blocking collective only inside
    MPI calls)."""
    from mpi4py import MPI

    MPI.Request.Testall(requests)


def _in_place():
    from mpi4py import MPI

    return MPI.IN_PLACE


def data_parallel(comm) -> DataParallel | None:
    """``Trainer(comm=...)``: None, an mpi4py communicator or a configured :class:`DataParallel`."""
    if comm is None or isinstance(comm, DataParallel):
        return comm
    if not callable(getattr(comm, "Iallreduce", None)):
        raise TypeError(f"comm must be an mpi4py communicator (MPI.COMM_WORLD) or a DataParallel, "
                        f"got {type(comm).__name__}")
    return DataParallel(comm)
