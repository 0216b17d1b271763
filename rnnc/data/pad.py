"""Variable-length sequences to rnnc's time-first arrays and back, and layout checks that say what was meant.

rnnc reads a sequence input as one array laid out ``(T, B, *features)`` (time first, then the batch) plus, for
an input declared with ``lengths=True``, a ``(B,)`` int64 array ``<name>_lengths``: sample ``b`` is valid at
steps ``0 .. lengths[b] - 1`` and padding after that is never read into state or loss.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _sample(name: str, k: int, seq) -> np.ndarray:
    arr = np.asarray(seq)
    if arr.ndim == 0:
        raise ValueError(f"{name}[{k}]: expected a sequence (an array whose first axis is time), got a scalar")
    if arr.dtype == object:
        raise ValueError(f"{name}[{k}]: expected numbers of one shape per step, got a ragged or object array")
    if len(arr) == 0:
        raise ValueError(f"{name}[{k}]: expected at least 1 step (rnnc lengths lie in 1..T), got an empty sequence")
    return arr


def pad(sequences: Sequence, length: int | None = None, value=0, dtype=None,
        name: str = "sequences") -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length sequences time-first, padding each to a common length.

    Parameters
    ----------
    sequences : sequence of array_like
        ``B`` sequences; sequence ``b`` has shape ``(L_b, *features)`` with ``L_b >= 1`` and the same
        ``features`` for all.
    length : int, optional
        The padded length ``T`` (default ``max_b L_b``); must be at least every ``L_b``.
    value : scalar
        What padded steps hold.
    dtype : dtype, optional
        Of the result (default: numpy's common type of the sequences).
    name : str
        The name used in error messages.

    Returns
    -------
    x : ndarray, shape (T, B, *features)
        ``x[t, b] = sequences[b][t]`` for ``t < L_b``, else ``value``.
    lengths : ndarray of int64, shape (B,)
        ``lengths[b] = L_b``: pass it as ``<input>_lengths``.
    """
    if len(sequences) == 0:
        raise ValueError(f"{name}: expected at least one sequence, got none")
    seqs = [_sample(name, k, s) for k, s in enumerate(sequences)]
    feat = seqs[0].shape[1:]
    for k, s in enumerate(seqs):
        if s.shape[1:] != feat:
            raise ValueError(f"{name}[{k}]: expected steps of shape {feat} (like {name}[0]), got {s.shape[1:]}")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    T = int(lengths.max()) if length is None else int(length)
    if T < lengths.max():
        k = int(lengths.argmax())
        raise ValueError(f"{name}[{k}]: expected at most length={T} steps, got {lengths[k]}")
    dt = np.result_type(*seqs) if dtype is None else np.dtype(dtype)
    out = np.full((T, len(seqs)) + feat, value, dtype=dt)
    for b, s in enumerate(seqs):
        out[: len(s), b] = s
    return out, lengths


def unpad(x: np.ndarray, lengths, name: str = "x") -> list[np.ndarray]:
    """The inverse of :func:`pad`: ``[x[:lengths[b], b] for b in range(B)]`` (views, not copies)."""
    x = np.asarray(x)
    lengths = check_lengths(f"{name}_lengths", lengths, batch=x.shape[1] if x.ndim > 1 else -1, steps=len(x))
    return [x[: int(n), b] for b, n in enumerate(lengths)]


def to_time_first(x: np.ndarray) -> np.ndarray:
    """``(B, T, ...)`` -> ``(T, B, ...)`` (a view): the layout rnnc reads sequence inputs in."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"to_time_first: expected an array (B, T, ...) with at least 2 axes, got shape {x.shape}")
    return np.swapaxes(x, 0, 1)


def to_batch_first(x: np.ndarray) -> np.ndarray:
    """``(T, B, ...)`` -> ``(B, T, ...)`` (a view), e.g. to hand rnnc outputs to a batch-first library."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"to_batch_first: expected an array (T, B, ...) with at least 2 axes, got shape {x.shape}")
    return np.swapaxes(x, 0, 1)


def check_lengths(name: str, lengths, batch: int, steps: int) -> np.ndarray:
    """``lengths`` as int64 if it is ``(batch,)`` integers in ``1 .. steps``; else one ``ValueError`` line.

    A lengths array whose size is the array's first axis, not its second, means the array is batch-first.
    """
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected a (B,) integer array, got {arr.dtype} of shape {arr.shape}")
    if len(arr) != batch:
        hint = (f"; it matches the first axis ({steps}): the data looks batch-first (B, T, ...), "
                f"use rnnc.data.to_time_first" if len(arr) == steps else "")
        raise ValueError(f"{name}: expected {batch} lengths (the batch axis, axis 1 of (T, B, ...)), "
                         f"got {len(arr)}{hint}")
    if len(arr) and (arr.min() < 1 or arr.max() > steps):
        hint = "; lengths beyond T suggest a batch-first (B, T, ...) array" if arr.max() > steps else ""
        raise ValueError(f"{name}: expected lengths in 1..{steps} (T, axis 0), got {arr.min()}..{arr.max()}{hint}")
    return arr.astype(np.int64, copy=False)


def check_sequence_array(name: str, x, features=(), lengths=None) -> np.ndarray:
    """Check that ``x`` is laid out ``(T, B, *features)``; refuse in one line that names the likely layout.

    A batch-first ``(B, T, *features)`` array has the same rank and feature axes, so it is caught only through
    ``lengths`` (when its size matches axis 0 instead of axis 1, or a length exceeds ``T``). When the feature
    shape is not at the end, the refusal says where it was found, e.g. ``(B, D, T)``.

    Returns ``x`` as an array.
    """
    x = np.asarray(x)
    feat = tuple(features) if isinstance(features, (tuple, list)) else (int(features),)
    want = f"(T, B{''.join(f', {d}' for d in feat)})"
    if x.ndim == 2 + len(feat) and x.shape[2:] == feat:
        if lengths is not None:
            check_lengths(f"{name}_lengths", lengths, batch=x.shape[1], steps=x.shape[0])
        return x
    raise ValueError(f"{name}: expected layout {want}, got shape {x.shape}{_layout_hint(x.shape, feat)}")


def _layout_hint(shape: tuple, feat: tuple) -> str:
    n = len(feat)
    if len(shape) == 1 + n and shape[1:] == feat:
        return " (no batch axis: for one sequence use x[:, None])"
    if not feat or len(shape) != 2 + n:
        return ""
    letters = "D" if n == 1 else "F"
    for start in range(0, 2):
        if shape[start:start + n] == feat:
            rest = ["B", "T"] if start == 1 else ["T", "B"]
            guess = rest[:start] + [letters] + rest[start:]
            perm = (n + 1, 0) + tuple(range(1, n + 1)) if start == 1 else (n, n + 1) + tuple(range(n))
            return (f": the features {feat} sit at axes {start}..{start + n - 1}, so this looks like "
                    f"({', '.join(guess)}); x.transpose{perm} gives (T, B, ...) if so")
    return ""
