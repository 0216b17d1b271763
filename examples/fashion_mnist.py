"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (Zalando's IDX files, gzipped).

``sudo apt-get install -y dataset-fashion-mnist`` puts the four files in ``/usr/share/datasets/fashion-mnist``
(``scripts/main.sh`` installs it); ``RNNC_FASHION_MNIST=<folder>`` points elsewhere. Images come back as
``uint8`` arrays ``(N, 1, 28, 28)`` (one channel, as a conv net reads them) and labels as ``int64`` ``(N,)``.

>>> x, y = load("test")            # the official 10,000-image test set
>>> x.shape, y.shape
((10000, 1, 28, 28), (10000,))
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
PACKAGE = "dataset-fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SIZES = {"train": 60000, "test": 10000}


def data_dir(folder: str | os.PathLike | None = None) -> Path:
    """The folder holding the IDX files: ``folder``, else ``$RNNC_FASHION_MNIST``, else the Debian path."""
    return Path(folder or os.environ.get("RNNC_FASHION_MNIST") or DEFAULT_DIR)


def available(folder=None) -> bool:
    """True when all four files are there."""
    d = data_dir(folder)
    return all((d / f).is_file() for pair in FILES.values() for f in pair)


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    """Parse one gzipped IDX file: big-endian magic, ``dims`` sizes, then unsigned bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    head = np.frombuffer(data[:4 * (dims + 1)], dtype=">u4")
    if int(head[0]) != magic:
        raise ValueError(f"{path}: not an IDX file of {dims} dims (magic {int(head[0]):#x}, expected {magic:#x})")
    shape = tuple(int(s) for s in head[1:])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 * (dims + 1))
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def load(split: str = "train", folder=None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 1, 28, 28), labels int64 (N,))`` of the ``"train"`` (60,000) or ``"test"`` (10,000)
    split."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = data_dir(folder)
    images, labels = (d / f for f in FILES[split])
    if not images.is_file() or not labels.is_file():
        raise FileNotFoundError(f"Fashion-MNIST {split} files not found in {d}; install them with "
                                f"`sudo apt-get install -y {PACKAGE}` or set RNNC_FASHION_MNIST to their folder")
    x = _read_idx(images, 0x803, 3)[:, None]
    y = _read_idx(labels, 0x801, 1).astype(np.int64)
    if len(x) != len(y) or len(x) != SIZES[split]:
        raise ValueError(f"Fashion-MNIST {split}: {len(x)} images and {len(y)} labels, expected {SIZES[split]}")
    return x, y


def balanced_subset(y: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of ``per_class`` samples of each class, drawn with ``default_rng(seed)``, in shuffled order:
    the fixed small subsets of the quick mode."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in classes])
    return rng.permutation(idx)
