"""Pictures of examples/captioning.py: training curves and attention maps (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth(v, k: int = 20) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    k = max(1, min(k, len(v)))
    return np.convolve(v, np.ones(k) / k, mode="valid")


def curves(res: dict, path: Path) -> None:
    """Training loss per word (moving mean of 20 steps) and validation caption accuracy per epoch, both models."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, color in (("attention", "tab:blue"), ("baseline", "tab:orange")):
        r = res[kind]
        steps = len(r["losses"]) / max(len(r["val"]), 1)
        sm = _smooth(r["losses"])
        ax1.plot((np.arange(len(sm)) + len(r["losses"]) - len(sm) + 1) / steps, sm, color=color, label=kind)
        ax2.plot(np.arange(1, len(r["val"]) + 1), r["val"], "o-", color=color, label=kind)
    ax1.set(xlabel="epoch", ylabel="cross-entropy per word", title="training loss (moving mean of 20 steps)")
    ax2.set(xlabel="epoch", ylabel="whole-caption accuracy", title="validation captions (greedy)", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def attention(img: np.ndarray, caption: np.ndarray, alpha: np.ndarray, path: Path) -> None:
    """One row per canvas: the canvas, then one panel per word (up to the first ``<end>``) with its attention map
    over the image.

    ``img`` (n, 1, 56, 56), ``caption`` (5, n) word ids, ``alpha`` (5, n, rows, cols) attention weights.
    """
    from captioning import END, VOCAB

    plt = _plt()
    n, steps = img.shape[0], caption.shape[0]
    fig, axes = plt.subplots(n, steps + 1, figsize=(1.5 * (steps + 1), 1.6 * n + 0.2), squeeze=False)
    side = img.shape[2] // alpha.shape[2], img.shape[3] // alpha.shape[3]
    for i in range(n):
        axes[i, 0].imshow(img[i, 0], cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_title("canvas", fontsize=8)
        said = list(caption[:, i])
        for s in range(steps):
            ax = axes[i, s + 1]
            if END in said[:s]:                                     # after <end>: nothing said
                ax.axis("off")
                continue
            up = np.kron(alpha[s, i], np.ones(side))
            ax.imshow(img[i, 0], cmap="gray", vmin=0, vmax=255)
            ax.imshow(up, cmap="inferno", alpha=0.6, vmin=0, vmax=up.max())
            word = VOCAB.tokens[int(caption[s, i])]
            ax.set_title(word, fontsize=9, color="tab:red" if int(caption[s, i]) == END else "black")
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
