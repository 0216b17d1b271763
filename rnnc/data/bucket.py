"""Batches of similar length, so short sequences do not pay for long ones, and a deterministic split.

A dataset here is a dict of fields with one entry per sample: a *sequence field* is a list of arrays
``(L_i, *features)``; a *sample field* is an array ``(N, *shape)`` (one label or vector per sample). Each
batch is a dict in rnnc's layout, ready for ``rc.interpret`` / ``f.forward`` / ``f.loss_and_grad``: sequence
fields ``(T_batch, B, *features)`` padded to the batch's own longest sequence, sample fields ``(B, *shape)``,
and ``<name>_lengths`` ``(B,)`` int64 for the sequence fields named in ``lengths``.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rnnc.data.pad import pad


def _is_sequence_field(value) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object)


def _size(data: dict) -> int:
    if not isinstance(data, dict) or not data:
        raise ValueError(f"data: expected a dict of fields (name -> list of sequences or (N, ...) array), "
                         f"got {type(data).__name__}")
    sizes = {name: len(v) for name, v in data.items()}
    first = next(iter(sizes))
    for name, n in sizes.items():
        if n != sizes[first]:
            raise ValueError(f"data[{name!r}]: expected {sizes[first]} samples (like {first!r}), got {n}")
    return sizes[first]


def bucket_indices(lengths, batch_size: int, seed: int = 0, epoch: int = 0, shuffle: bool = True,
                   pool: int | None = 50, drop_last: bool = False) -> list[np.ndarray]:
    """Split sample indices into batches of similar length; every index appears once (per epoch).

    The semantics, as a plain loop (``rng = np.random.default_rng([seed, epoch])``)::

        order = rng.permutation(N) if shuffle else arange(N)
        for each pool of pool * batch_size consecutive indices of order:
            sort the pool by length (stable, so ties keep the shuffled order)
            cut it into batches of batch_size
        shuffle the list of batches (if shuffle)

    ``pool=None`` sorts the whole dataset at once (least padding, least randomness). The result depends only
    on ``(lengths, batch_size, seed, epoch, shuffle, pool, drop_last)``. With ``drop_last`` a final batch
    smaller than ``batch_size`` in each pool is left out.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths: expected a (N,) array, got shape {lengths.shape}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if pool is not None and int(pool) < 1:
        raise ValueError(f"pool: expected a positive number of batches or None, got {pool!r}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    span = len(order) if pool is None else int(pool) * int(batch_size)
    batches = []
    for start in range(0, len(order), max(span, 1)):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        for b in range(0, len(chunk), batch_size):
            if not drop_last or b + batch_size <= len(chunk):
                batches.append(chunk[b:b + batch_size])
    if shuffle:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


def collate(data: dict, index, lengths=None, value=0) -> dict:
    """One batch of ``data`` (see the module docstring) for sample indices ``index``, in rnnc's layout.

    ``lengths`` names the sequence fields that get a ``<name>_lengths`` array (default: the first sequence
    field, as for an input declared ``m.input(name, ..., lengths=True)``); other sequence fields (per-step
    targets, which share the input's lengths) are padded only.
    """
    index = np.asarray(index, dtype=np.int64)
    out = {}
    for name, field in data.items():
        if _is_sequence_field(field):
            x, lens = pad([field[k] for k in index], value=value, name=f"data[{name!r}]")
            out[name] = x
            if name in _length_fields(data, lengths):
                out[f"{name}_lengths"] = lens
        else:
            out[name] = np.asarray(field)[index]
    return out


def _length_fields(data: dict, lengths) -> tuple:
    if lengths is None:
        return tuple(k for k, v in data.items() if _is_sequence_field(v))[:1]
    names = (lengths,) if isinstance(lengths, str) else tuple(lengths)
    for n in names:
        if n not in data or not _is_sequence_field(data[n]):
            raise ValueError(f"lengths: {n!r} is not a sequence field of data (fields: {sorted(data)})")
    return names


def batches(data: dict, batch_size: int, lengths=None, seed: int = 0, epoch: int = 0, shuffle: bool = True,
            pool: int | None = 50, drop_last: bool = False, value=0) -> Iterator[dict]:
    """Iterate over one epoch of ``data`` in length-bucketed batches (:func:`bucket_indices`, :func:`collate`).

    Samples are bucketed by their longest sequence field, so each batch is padded only to its own longest
    sample: ``T_batch = max(L_i for i in batch)``. Pass ``epoch`` (or a new ``seed``) for a new order each epoch;
    the same arguments give the same batches.

    >>> import numpy as np, rnnc.data as rd
    >>> data = {"x": [np.ones((n, 2)) for n in (5, 1, 4, 2)], "y": np.arange(4)}
    >>> [(b["x"].shape, b["x_lengths"].tolist()) for b in rd.batches(data, 2, shuffle=False)]
    [((2, 2, 2), [1, 2]), ((5, 2, 2), [4, 5])]
    """
    n = _size(data)
    seq = [v for v in data.values() if _is_sequence_field(v)]
    if seq:
        key = np.array([max(len(f[k]) for f in seq) for k in range(n)])
    else:
        key = np.zeros(n, dtype=np.int64)
    names = _length_fields(data, lengths)
    for index in bucket_indices(key, batch_size, seed, epoch, shuffle, pool, drop_last):
        yield collate(data, index, names, value)


def split(data, val: float | int = 0.1, seed: int = 0):
    """Split ``data`` into (train, validation) by a seeded permutation of the samples.

    ``data`` is a dict of fields (as for :func:`batches`), a list, or an array (samples along axis 0). ``val`` is
    a fraction in [0, 1) or a sample count. The validation set is the first ``round(val * N)`` (or ``val``)
    samples of ``np.random.default_rng(seed).permutation(N)``, kept in their original order, as is the
    training set; the same ``seed`` gives the same split. Returns two objects of ``data``'s kind.
    """
    n = _size(data) if isinstance(data, dict) else len(data)
    if isinstance(val, float) and not 0.0 <= val < 1.0:
        raise ValueError(f"val: expected a fraction in [0, 1) or a sample count, got {val}")
    k = int(round(val * n)) if isinstance(val, float) else int(val)
    if not 0 <= k <= n:
        raise ValueError(f"val: expected a count in 0..{n}, got {val}")
    perm = np.random.default_rng(int(seed)).permutation(n)
    val_idx, train_idx = np.sort(perm[:k]), np.sort(perm[k:])

    def take(obj, idx):
        if isinstance(obj, dict):
            return {name: take(v, idx) for name, v in obj.items()}
        if isinstance(obj, np.ndarray):
            return obj[idx]
        return [obj[i] for i in idx]

    return take(data, train_idx), take(data, val_idx)
