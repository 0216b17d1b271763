"""Data augmentation of image batches, drawn per batch from the trainer's seed (a run, and a resumed run, sees
the same batches).

``FlipShift`` is the usual pair for small images (torchvision's ``RandomHorizontalFlip`` and
``RandomCrop(size, padding=shift)``): each sample is mirrored left-right with probability ``flip``, then moved
by ``(dy, dx)`` drawn uniformly from ``[-shift, shift]``, the uncovered border filled with ``fill``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FlipShift:
    """:math:`x'_n[c, y, x] = x_n[c, y + d_y, f(x) + d_x]` (``fill`` outside the map), with :math:`f` the
    mirror :math:`x \\mapsto W - 1 - x` for a drawn fraction ``flip`` of the samples, the identity otherwise."""

    flip: float = 0.5
    shift: int = 2
    key: str = "x"
    fill: float = 0.0

    def __call__(self, batch: dict, rng: np.random.Generator) -> dict:
        if self.key not in batch:
            raise KeyError(f"FlipShift: the batch has no input {self.key!r} (it has {sorted(batch)})")
        x = np.asarray(batch[self.key])
        if x.ndim != 4:
            raise ValueError(f"FlipShift: input {self.key!r} should be images (N, C, H, W), got shape {x.shape}")
        n, _, h, w = x.shape
        s = int(self.shift)
        mirror = rng.random(n) < self.flip
        dy, dx = rng.integers(-s, s + 1, size=(2, n))
        padded = np.full(x.shape[:2] + (h + 2 * s, w + 2 * s), self.fill, dtype=x.dtype)
        padded[:, :, s:s + h, s:s + w] = x
        out = np.empty_like(x)
        for k in range(n):
            window = padded[k, :, s + dy[k]:s + dy[k] + h, s + dx[k]:s + dx[k] + w]
            out[k] = window[:, :, ::-1] if mirror[k] else window
        return {**batch, self.key: out}
