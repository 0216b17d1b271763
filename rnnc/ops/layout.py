"""Runtime array layouts: ``(*axis sizes, [B], *feature shape)``, and moving arrays between them."""
from __future__ import annotations

import numpy as np


def align(arr: np.ndarray, src_axes, src_batched: bool, dst_axes, dst_batched: bool) -> np.ndarray:
    """View ``arr`` (layout src) in layout dst by inserting size-1 dims for missing axes / batch.

    ``src_axes`` must be a subset of ``dst_axes``; features are left as they are.
    """
    lead = len(src_axes) + int(src_batched)
    feat = arr.shape[lead:]
    sizes = dict(zip(src_axes, arr.shape))
    shape = [sizes.get(a, 1) for a in dst_axes]
    if dst_batched:
        shape.append(arr.shape[len(src_axes)] if src_batched else 1)
    return arr.reshape((*shape, *feat))


def pad_features(arrays, lead: int):
    """Give every array the same feature rank (size-1 dims after the lead), for numpy broadcasting."""
    rank = max(a.ndim - lead for a in arrays)
    out = []
    for a in arrays:
        missing = rank - (a.ndim - lead)
        out.append(a.reshape(a.shape[:lead] + (1,) * missing + a.shape[lead:]) if missing else a)
    return out

