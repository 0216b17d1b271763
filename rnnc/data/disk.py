"""Datasets larger than memory: arrays on disk, read one batch at a time.

The best source is a folder of ``.npy`` files, one per field (``x.npy``, ``x_lengths.npy``, ``y.npy``): each is
opened with ``np.load(mmap_mode="r")``, so only the rows a batch asks for are read. An ``.npz`` file also works,
but its members are zip entries that numpy cannot memory-map: each member is read whole, once, on first use.
For a large ``.npz``, convert it once with :func:`npz_to_folder`.

Fields are stored in rnnc's layout: a sequence field time-first ``(T, N, *features)`` (the samples on axis 1),
a per-sample field ``(N, *shape)``, and a lengths field ``<name>_lengths`` ``(N,)`` integers.
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rnnc.data.bucket import bucket_indices
from rnnc.train.files import atomic_write


def npz_to_folder(npz_path, folder) -> Path:
    """Write every member ``name`` of ``npz_path`` to ``folder/name.npy`` (one member in memory at a time)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(npz_path, allow_pickle=False) as z:
        for name in z.files:
            if not name.isidentifier():
                raise ValueError(f"{npz_path}: member {name!r}: expected an identifier as a field name")
            member = z[name]
            atomic_write(str(folder / f"{name}.npy"), lambda f, a=member: np.save(f, a, allow_pickle=False),
                         ".npy")
    return folder


class DiskDataset:
    """Fields read lazily from a folder of ``.npy`` files (memory-mapped) or from an ``.npz`` file.

    Parameters
    ----------
    source : str or os.PathLike
        A folder of ``<field>.npy`` files, or an ``.npz`` file.
    sequences : iterable of str, optional
        The time-first fields ``(T, N, ...)``. Default: the fields ``name`` that have a ``name_lengths`` field.
        Every other field is per-sample ``(N, ...)``.

    Every field must hold the same number of samples ``N``; a refusal names the field, the axis and both sizes.
    """

    def __init__(self, source, sequences=None):
        self.source = Path(source)
        self.arrays = self._open()
        names = set(self.arrays)
        default = {n[: -len("_lengths")] for n in names if n.endswith("_lengths")} & names
        self.sequences = tuple(sorted(default if sequences is None else set(sequences)))
        for n in self.sequences:
            if n not in names:
                raise ValueError(f"sequences: {n!r} is not a field of {self.source} (fields: {sorted(names)})")
        self.size = self._count()

    def _open(self) -> dict:
        if self.source.is_dir():
            files = sorted(self.source.glob("*.npy"))
            if not files:
                raise ValueError(f"{self.source}: expected .npy files (one per field), found none")
            return {f.stem: np.load(f, mmap_mode="r", allow_pickle=False) for f in files}
        try:
            z = np.load(self.source, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{self.source}: expected a folder of .npy files or an .npz file ({e})") from None
        if not hasattr(z, "files"):
            raise ValueError(f"{self.source}: expected a folder of .npy files or an .npz file, got one array")
        return _LazyNpz(z)

    def _axis(self, name: str) -> int:
        return 1 if name in self.sequences else 0

    def _count(self) -> int:
        sizes = {}
        for name in self.arrays:
            arrays = self.arrays
            shape = arrays.shape_of(name) if isinstance(arrays, _LazyNpz) else arrays[name].shape
            axis = self._axis(name)
            if len(shape) <= axis:
                raise ValueError(f"{self.source}: {name}: expected samples on axis {axis}, got shape {shape}")
            sizes[name] = shape[axis]
        first = next(iter(sizes))
        for name, n in sizes.items():
            if n != sizes[first]:
                hint = "" if name in self.sequences else f"; if {name!r} is (T, N, ...), name it in sequences="
                raise ValueError(f"{self.source}: {name}: expected {sizes[first]} samples (like {first!r}) on axis "
                                 f"{self._axis(name)}, got {n}{hint}")
        return sizes[first]

    def __len__(self) -> int:
        return self.size

    def take(self, index, crop: bool = True) -> dict:
        """The samples ``index`` as one batch in rnnc's layout. With ``crop`` (and a lengths field), time-first
        fields of the lengths' ``T`` are cut to the batch's longest sample."""
        index = np.sort(np.asarray(index, dtype=np.int64))
        steps, T = None, None
        if crop and self._bucket_field():
            lens = np.asarray(self.arrays[self._bucket_field() + "_lengths"][index])
            T, steps = self.arrays[self._bucket_field()].shape[0], int(lens.max(initial=1))
        out = {}
        for name in self.arrays:
            arr = self.arrays[name]
            if name in self.sequences:
                cut = steps if steps is not None and arr.shape[0] == T else arr.shape[0]
                out[name] = np.asarray(arr[:cut, index])
            else:
                out[name] = np.asarray(arr[index])
        return out

    def _bucket_field(self) -> str | None:
        with_lengths = [n for n in self.sequences if f"{n}_lengths" in self.arrays]
        return with_lengths[0] if with_lengths else None

    def batches(self, batch_size: int, seed: int = 0, epoch: int = 0, shuffle: bool = True,
                pool: int | None = 50, drop_last: bool = False) -> Iterator[dict]:
        """One epoch of batches (see :func:`rnnc.data.bucket_indices`), bucketed by the first lengths field and
        cropped to each batch's longest sample; only the rows of a batch are read from disk. Within a batch,
        samples are in index order."""
        field = self._bucket_field()
        key = np.asarray(self.arrays[field + "_lengths"]) if field else np.zeros(self.size, dtype=np.int64)
        for index in bucket_indices(key, batch_size, seed, epoch, shuffle, pool, drop_last):
            yield self.take(index)

    def __repr__(self) -> str:
        return f"<DiskDataset {self.source}: {self.size} samples, fields {sorted(self.arrays)}>"


class _LazyNpz(dict):
    """The members of an ``.npz``, each read whole on first access (zip members cannot be memory-mapped)."""

    def __init__(self, z):
        super().__init__({name: None for name in z.files})
        self._z = z

    def __getitem__(self, name):
        value = super().__getitem__(name)
        if value is None:
            value = self._z[name]
            self[name] = value
        return value

    def shape_of(self, name: str) -> tuple:
        """The member's shape from its ``.npy`` header, without reading its data."""
        with self._z.zip.open(f"{name}.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            return read(f)[0]

    def __iter__(self):
        return iter(list(self.keys()))

