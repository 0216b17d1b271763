"""The order in which training visits samples, and each rank's part of it (data-parallel training).

One process and ``N`` ranks visit the same *global* batches in the same order: epoch ``e`` permutes the ``n``
samples with ``default_rng([seed, e])`` and cuts the permutation into batches of ``batch_size`` (the last one
may be shorter). Rank ``r`` of ``N`` computes on the ``r``-th contiguous part of every global batch
(:func:`split`: sizes differ by at most one, the first ``B mod N`` parts one longer), so the parts of all ranks
put end to end are the global batch, whatever ``N``:

.. code-block:: python

    for e in range(epochs):
        order = default_rng([seed, e]).permutation(n)
        for k in range(0, n, batch_size):
            batch = order[k:k + batch_size]
            mine = batch[split(len(batch), N)[r]]       # this rank's rows

A rank may get no rows of a short last batch (``B < N``); it then contributes nothing to that step's sums.
Pure numpy: no MPI here, so the order can be checked without one.
"""
from __future__ import annotations

import numpy as np


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(n)`` that epoch ``epoch`` visits (the same on every rank and for any ``N``)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Where each global batch of an epoch starts in :func:`epoch_order`."""
    return list(range(0, n, batch_size))


def split(size: int, ranks: int) -> list[slice]:
    """The ``ranks`` contiguous parts of a batch of ``size`` rows, as ``np.array_split`` cuts it: part ``r`` is
    ``size // ranks`` rows, one more for ``r < size % ranks``."""
    base, extra = divmod(size, ranks)
    parts, start = [], 0
    for r in range(ranks):
        stop = start + base + (r < extra)
        parts.append(slice(start, stop))
        start = stop
    return parts


class DistributedSampler:
    """Rank ``rank`` of ``ranks``' rows of every global batch of ``batch_size`` over ``n`` samples.

    Examples
    --------
    >>> s = DistributedSampler(10, batch_size=4, seed=0, rank=1, ranks=2)
    >>> [len(rows) for rows in s.batches(epoch=0)]
    [2, 2, 1]
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, ranks: int = 1):
        if not 0 <= rank < ranks:
            raise ValueError(f"rank must lie in [0, {ranks - 1}], got {rank}")
        self.n, self.batch_size, self.seed, self.rank, self.ranks = int(n), int(batch_size), int(seed), rank, ranks

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """Every global batch of ``epoch``, in order (what one process computes on)."""
        order = epoch_order(self.n, self.seed, epoch)
        return [order[s:s + self.batch_size] for s in batch_starts(self.n, self.batch_size)]

    def batches(self, epoch: int, start: int = 0) -> list[np.ndarray]:
        """This rank's rows of each global batch of ``epoch`` from batch ``start`` on (a resumed epoch)."""
        return [b[split(len(b), self.ranks)[self.rank]] for b in self.global_batches(epoch)[start:]]
