"""The on-disk cache of generated modules.

A module's file name is a hash of its source plus the rnnc, Numba and numpy versions, so Numba's
``cache=True`` (which keys on the file) lets a second process load compiled code instead of compiling.
Files are written atomically (a temp file in the same folder, then ``os.replace``), end with a footer
holding the SHA-256 of the body, and are verified before use: a corrupt or truncated entry is rewritten,
never trusted. Two processes writing the same entry write identical bytes, so either write wins.
Numba's own entries for a module's functions (``__pycache__/*.nbi``, ``*.nbc``, pickles Numba writes
atomically) are loaded through :func:`tolerate_corrupt_entries`: one that cannot be read is a miss, compiled
and written again, instead of an error on every later call.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

FOOTER = "# rnnc-sha256: "


def cache_dir() -> Path:
    """``$RNNC_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnc``, else ``~/.cache/rnnc``."""
    env = os.environ.get("RNNC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnc"


def _versions() -> str:
    import numba
    import numpy

    import rnnc

    return f"rnnc {rnnc.__version__} numba {numba.__version__} numpy {numpy.__version__}"


def entry_text(source: str) -> tuple[str, str]:
    """(file key, full file text with footer) for a generated module."""
    body = source if source.endswith("\n") else source + "\n"
    body += f"# built with {_versions()}\n"
    digest = hashlib.sha256(body.encode()).hexdigest()
    return digest[:24], body + FOOTER + digest + "\n"


def verify(text: str) -> bool:
    """True if ``text`` ends with a footer matching the SHA-256 of everything before it."""
    body, sep, tail = text.rpartition(FOOTER)
    if not sep or not tail.endswith("\n"):
        return False
    return hashlib.sha256(body.encode()).hexdigest() == tail.strip()


def store(source: str, folder: Path | None = None) -> tuple[Path, bool]:
    """Write ``source`` to its cache entry unless a valid identical one exists. Returns (path, was_cached)."""
    folder = Path(folder) if folder is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key, text = entry_text(source)
    path = folder / f"rnnc_{key}.py"
    try:
        existing = path.read_text()
    except (OSError, UnicodeDecodeError):
        existing = None
    if existing == text and verify(existing):
        return path, True
    _write_atomic(path, text, key)
    return path, False


def lookup(key: str, folder: Path | None = None) -> tuple[Path, str | None]:
    """The entry stored under ``key``: (path, its verified text) or (path, None) if missing or corrupt."""
    folder = Path(folder) if folder is not None else cache_dir()
    path = folder / f"rnnc_{key}.py"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return path, None
    return path, (text if verify(text) else None)


def store_keyed(key: str, source: str, folder: Path | None = None) -> Path:
    """Write ``source`` (plus the SHA-256 footer) atomically under ``key``, a structural key of what it
    was generated from (see :mod:`rnnc.runtime.graph_key`). Returns the path."""
    folder = Path(folder) if folder is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    body = source if source.endswith("\n") else source + "\n"
    body += f"# built with {_versions()}\n"
    text = body + FOOTER + hashlib.sha256(body.encode()).hexdigest() + "\n"
    path = folder / f"rnnc_{key}.py"
    _write_atomic(path, text, key)
    return path


def _write_atomic(path: Path, text: str, key: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".rnnc_{key}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(path: Path):
    """Import a cached module file under a private module name."""
    name = f"rnnc_gen_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tolerate_corrupt_entries(module)
    sys.modules[name] = module
    return module


class _Tolerant:
    """Mixin for a Numba cache: an entry that cannot be read (truncated, corrupt) is a miss, and an index
    that cannot be read is replaced when the new entry is saved."""

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception:                    # noqa: BLE001 (any unreadable entry: compile instead)
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception:                    # noqa: BLE001 (an unreadable index: start it again)
            try:
                Path(self._cache_file._index_path).unlink(missing_ok=True)
                super().save_overload(sig, data)
            except Exception:                # noqa: BLE001 (not cached, e.g. a read-only folder; the code runs)
                pass


_TOLERANT: dict = {}


def tolerate_corrupt_entries(module) -> None:
    """Give every cached Numba function of ``module`` a cache that treats unreadable entries as misses."""
    for obj in vars(module).values():
        cache = getattr(obj, "_cache", None)
        if cache is None or isinstance(cache, _Tolerant) or not hasattr(cache, "load_overload"):
            continue
        cls = type(cache)
        if cls not in _TOLERANT:
            _TOLERANT[cls] = type(f"Tolerant{cls.__name__}", (_Tolerant, cls), {})
        cache.__class__ = _TOLERANT[cls]
