"""The on-disk cache of generated modules.

A module's file name is a hash of its source plus the rnnc, Numba and numpy versions, so Numba's
``cache=True`` (which keys on the file) lets a second process load compiled code instead of compiling.
Files are written atomically (a temp file in the same folder, then ``os.replace``), end with a footer
holding the SHA-256 of the body, and are verified before use: a corrupt or truncated entry is rewritten,
never trusted. Two processes writing the same entry write identical bytes, so either write wins.
Numba's own entries for a module's functions (``__pycache__/*.nbi``, ``*.nbc``, pickles Numba writes
atomically) are loaded through :func:`tolerate_corrupt_entries`: one that cannot be read is a miss, compiled
and written again, instead of an error on every later call.

What the cache guarantees: an entry is code rnnc imports and runs, and Numba's entries are pickles it loads, so
the footer checks integrity, not authorship. The guarantee is that **only your own user can write where rnnc
reads**: the folder is created private (mode 0700); a folder owned by another user, or one that its group or
everyone may write, is refused with a ``RuntimeWarning`` naming it and why, and so is one that cannot be
written (a read-only or unusable path). rnnc then compiles in a private temporary folder of its own, removed
when the process exits (nothing written to or read from the refused folder, nothing kept for later processes).
Entry files not owned by you, or writable by others, are not trusted either (rebuilt, never imported). Numba's
cache files for rnnc's own compiled helpers (the ``@njit(cache=True)`` functions of ``rnnc/backends``) live in
the same folder, under ``helpers/`` (:class:`HelperLocator`), never inside the installed package. The folder's
parents are not checked: a parent that someone else may write lets them replace the folder itself.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.util
import os
import shutil
import stat
import sys
import tempfile
import warnings
from pathlib import Path

from rnnc.version import __version__

try:
    import fcntl
except ImportError:          # not POSIX: no locks (Numba's own behaviour)
    fcntl = None

FOOTER = "# rnnc-sha256: "
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_dir() -> Path:
    """``$RNNC_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnc``, else ``~/.cache/rnnc``."""
    env = os.environ.get("RNNC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnc"


def _uid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def refusal(folder: Path) -> str | None:
    """Why ``folder`` cannot be rnnc's cache folder (None if it can), creating it private (0700) if missing:
    it cannot be created, is not a folder, belongs to another user, its group or everyone may write it, or it
    cannot be written."""
    if folder.exists() and not folder.is_dir():
        return "it is not a folder"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
    except OSError as e:
        return f"it cannot be created ({e.strerror or e})"
    uid = _uid()
    if uid is not None and st.st_uid != uid:
        return f"it belongs to another user (uid {st.st_uid}; you are uid {uid})"
    if uid is not None and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"its group or everyone may write it (mode {stat.S_IMODE(st.st_mode):04o}), so others could plant "
                f"code that rnnc would run (chmod 700 it)")
    if not _writable(str(folder), st.st_dev, st.st_ino, st.st_mode):
        return "it cannot be written (read-only?)"
    return None


@functools.lru_cache(maxsize=64)
def _writable(folder: str, dev: int, ino: int, mode: int) -> bool:
    """Can a file be created in ``folder``? (Tried, not inferred from the mode: root writes anywhere, a read-only
    mount refuses everyone.) Remembered per folder, device, inode and mode."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rnnc-probe.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def usable_dir(folder: Path | None = None) -> Path:
    """The folder rnnc keeps entries in: ``folder`` (default :func:`cache_dir`) unless :func:`refusal` gives a
    reason, else a private temporary folder, removed at exit, with a one-line ``RuntimeWarning``."""
    folder = Path(folder) if folder is not None else cache_dir()
    why = refusal(folder)
    if why is None:
        return folder
    if (str(folder), why) not in _WARNED:                  # once per folder and reason in a process
        _WARNED.add((str(folder), why))
        warnings.warn(f"rnnc cache folder {str(folder)!r} is not used: {why}; compiling in a private temporary "
                      f"folder instead (removed at exit)", RuntimeWarning, stacklevel=3)
    return _private_temp()


_WARNED: set = set()


@functools.lru_cache(maxsize=1)
def _private_temp() -> Path:
    path = Path(tempfile.mkdtemp(prefix="rnnc-cache-"))        # mode 0700, this user's
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def trusted(path: Path) -> bool:
    """Is the entry file ``path`` this user's, and writable by nobody else? (False if it cannot be read.)"""
    try:
        st = path.stat()
    except OSError:
        return False
    uid = _uid()
    return stat.S_ISREG(st.st_mode) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and (
        uid is None or st.st_uid == uid)


def _versions() -> str:
    import numba
    import numpy

    return f"rnnc {__version__} numba {numba.__version__} numpy {numpy.__version__}"


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
    folder = usable_dir(folder)
    key, text = entry_text(source)
    path = folder / f"rnnc_{key}.py"
    try:
        existing = path.read_text() if trusted(path) else None
    except (OSError, UnicodeDecodeError):
        existing = None
    if existing == text and verify(existing):
        return path, True
    _write_atomic(path, text, key)
    return path, False


def lookup(key: str, folder: Path | None = None) -> tuple[Path, str | None]:
    """The entry stored under ``key``: (path, its verified text) or (path, None) if missing or corrupt."""
    path = usable_dir(folder) / f"rnnc_{key}.py"
    if not trusted(path):
        return path, None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return path, None
    return path, (text if verify(text) else None)


def store_keyed(key: str, source: str, folder: Path | None = None) -> Path:
    """Write ``source`` (plus the SHA-256 footer) atomically under ``key``, a structural key of what it
    was generated from (see :mod:`rnnc.runtime.graph_key`). Returns the path."""
    folder = usable_dir(folder)
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
    """Import a cached module file under a private module name (refused unless :func:`trusted`)."""
    if not trusted(path):               # checked first: an entry replaced since it was imported is refused too
        raise PermissionError(f"rnnc cache entry {str(path)!r} is not this user's or may be written by others: "
                              f"not imported")
    name = f"rnnc_gen_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    install_helper_locator()
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    install_helper_locator()            # again: the module may have loaded Numba (or its CUDA target) itself
    tolerate_corrupt_entries(module)
    sys.modules[name] = module
    return module


class _Tolerant:
    """Mixin for a Numba cache: an entry that cannot be read (truncated, corrupt) is a miss, and an index
    that cannot be read is replaced when the new entry is saved.

    Two processes compiling the same functions at once (``mpiexec -n 2`` or test workers on a cold cache) race
    in Numba's index: each reads it, picks the first free data file ``<name>.1.nbc`` for its own signature and
    writes index and data, so one index can end up naming another signature's data, and a later load returned
    code typed for other arguments (seen as a typing error in an unrelated caller). Here a save holds an
    exclusive ``flock`` on ``<index>.lock`` from reading the index to writing the data, a load a shared one,
    and a loaded entry compiled for other argument types than asked is a miss."""

    def load_overload(self, sig, target_context):
        try:
            with _index_lock(self, exclusive=False):
                loaded = super().load_overload(sig, target_context)
        except Exception:                    # noqa: BLE001 (any unreadable entry: compile instead)
            return None
        return loaded if _compiled_for(loaded, sig) else None

    def save_overload(self, sig, data):
        with _index_lock(self, exclusive=True):
            try:
                super().save_overload(sig, data)
            except Exception:                    # noqa: BLE001 (an unreadable index: start it again)
                try:
                    Path(self._cache_file._index_path).unlink(missing_ok=True)
                    super().save_overload(sig, data)
                except Exception:                # noqa: BLE001 (not cached, e.g. a read-only folder; the code runs)
                    pass


@contextlib.contextmanager
def _index_lock(cache, exclusive: bool):
    """An ``flock`` on the lock file beside ``cache``'s index (a save creates the folder first; none where the
    file cannot be made: a read-only folder, where nothing is saved either); released when the file is closed."""
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    fd = None
    if fcntl is not None and index is not None:
        try:
            if exclusive:                    # a cold cache: the folder Numba would create at the save
                cache._impl.locator.ensure_cache_path()
            fd = os.open(index + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _compiled_for(loaded, sig) -> bool:
    """Is a loaded CPU overload compiled for ``sig``'s argument types (other targets' objects pass)?"""
    if loaded is None:
        return True
    args = getattr(getattr(loaded, "signature", None), "args", None)
    if args is None:
        return True
    from numba.core import sigutils

    return tuple(args) == tuple(sigutils.normalize_signature(sig)[0])


_TOLERANT: dict = {}


def tolerate_corrupt_entries(module) -> None:
    """Give every cached Numba function of ``module`` a cache that treats unreadable entries as misses; for a
    module of rnnc's own (``gemm.py``, ``kernels_*.py``, which call this once their functions are defined), a
    cache in rnnc's cache folder (:class:`HelperLocator`) instead of the one Numba set up beside the source."""
    install_helper_locator()
    for obj in vars(module).values():
        cache = getattr(obj, "_cache", None)
        if cache is None or isinstance(cache, _Tolerant) or not hasattr(cache, "load_overload"):
            continue
        if not isinstance(getattr(getattr(cache, "_impl", None), "locator", None), HelperLocator) and \
                HelperLocator.owns(getattr(obj, "py_func", None)):
            cache = obj._cache = type(cache)(obj.py_func)     # defined before the locator was installed
        cls = type(cache)
        if cls not in _TOLERANT:
            _TOLERANT[cls] = type(f"Tolerant{cls.__name__}", (_Tolerant, cls), {})
        cache.__class__ = _TOLERANT[cls]


class HelperLocator:
    """Where Numba caches a compiled function of rnnc's own modules (``gemm.py``, ``kernels_*.py``...):
    ``<cache folder>/helpers/<module folder>_<hash>/``, not Numba's default ``__pycache__`` beside the source,
    which is inside the installed package. Numba asks each class of ``CacheImpl._locator_classes`` in turn for a
    function's locator; :func:`install_helper_locator` puts this one first, and it answers only for rnnc's files."""

    def __init__(self, py_func, py_file: str, folder: Path):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        here = os.path.dirname(os.path.abspath(py_file))
        sub = f"{os.path.basename(here)}_{hashlib.sha256(here.encode()).hexdigest()[:16]}"
        self._cache_path = str(folder / "helpers" / sub)

    @staticmethod
    def owns(py_func) -> bool:
        """Is ``py_func`` defined in a file of the rnnc package?"""
        path = getattr(getattr(py_func, "__code__", None), "co_filename", "")
        return os.path.abspath(path).startswith(_PACKAGE_DIR + os.sep)

    @classmethod
    def from_function(cls, py_func, py_file: str):
        if not os.path.abspath(py_file).startswith(_PACKAGE_DIR + os.sep):
            return None                                   # not rnnc's: Numba's own locators decide
        locator = cls(py_func, py_file, usable_dir())
        try:
            locator.ensure_cache_path()
        except OSError:
            locator = cls(py_func, py_file, _private_temp())
        return locator

    def ensure_cache_path(self) -> None:
        os.makedirs(self._cache_path, mode=0o700, exist_ok=True)

    def get_cache_path(self) -> str:
        return self._cache_path

    def get_source_stamp(self):
        """The digest of the function's file and of the helper files beside it (``kernels_*.py``, ``conv_*.py`` and
        :data:`_HELPER_FILES`): a compiled helper holds the code of the helpers it calls (``lak.row_products``
        holds ``gk.dot``'s call of gemm's external function), and Numba checks only the caller's own file. Any
        change of one invalidates all, so no cached caller calls a function by an old name or signature (a
        crash, not an error)."""
        folder = os.path.dirname(os.path.abspath(self._py_file))
        files = sorted({os.path.abspath(self._py_file), *(os.path.join(folder, f) for f in os.listdir(folder)
                                                           if f in _HELPER_FILES or f.startswith(_HELPER_PREFIXES))})
        stats = [(f, os.stat(f)) for f in files if f.endswith(".py")]
        return "-".join(_source_digest(f, st.st_mtime_ns, st.st_size)[:16] for f, st in stats)

    def get_disambiguator(self) -> str:
        return str(self._lineno)


#: files beside the CPU helpers whose change invalidates every cached helper: the kernels, the convolution code
#: they compile in (``conv_*.py``), the products, the packed layout, and the decorators' options (``njit.py``)
_HELPER_FILES = ("gemm.py", "packed_layout.py", "njit.py")
_HELPER_PREFIXES = ("kernels_", "conv_")


@functools.cache
def _source_digest(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def install_helper_locator() -> None:
    """Put :class:`HelperLocator` first among the cache locators of Numba's CPU target and, once it is loaded,
    its CUDA target (a function defined later in rnnc's modules is cached in rnnc's folder from the start).
    Imports nothing: ``import rnnc`` does not load Numba."""
    for modname in ("numba.core.caching", "numba.cuda.core.caching"):
        module = sys.modules.get(modname)
        for cls_name in ("CacheImpl", "_CacheImpl"):
            classes = getattr(getattr(module, cls_name, None), "_locator_classes", None)
            if isinstance(classes, list) and HelperLocator not in classes:
                classes.insert(0, HelperLocator)

