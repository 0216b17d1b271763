"""How rnnc writes and reads its own files: atomically, without leftovers, and never trusting what it reads.

- :func:`atomic_write` writes to a temporary file in the target's folder, fsyncs it, renames it over the
  target and fsyncs the folder: a crash or a kill leaves the old file or the new one, never a mix.
- Temporary files are named ``.rnnc-tmp-<host>-<pid>-<random>.<ext>``. A kill during a write (SIGKILL, power
  loss) leaves one behind; the next save or load in that folder removes it (:func:`remove_stale_temps`) when
  its writer is gone: the pid is not a live process on this host, or it is this process and the file is not
  one it is writing now. Files of another host (a shared folder) are removed only when a day old, since their
  pids cannot be checked from here.
- :func:`parse_json` reads untrusted JSON: UTF-8 only, at most ``MAX_JSON_BYTES``, nesting at most
  ``MAX_JSON_DEPTH`` deep; every refusal is one :class:`CheckpointError` line naming the file.
"""
from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time

MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 64
FOREIGN_TEMP_AGE_S = 24 * 3600
_TEMP = re.compile(r"\.rnnc-tmp-(?P<host>[A-Za-z0-9.]*)-(?P<pid>[0-9]{1,12})-[a-z0-9_]+\.[a-z]+\Z")
_writing: set[str] = set()   # temporary files this process is writing now


class CheckpointError(ValueError):
    """A checkpoint or saved model that cannot be trusted: truncated, tampered, malformed, wrong format or version.
    The message is one line naming the file and, where there is one, the field."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname())[:32]


def _alive(pid: int) -> bool:
    if os.name == "nt":   # os.kill(pid, 0) would end the process there: keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):
        return False
    except OSError:   # EPERM: alive, another user's
        return True
    return True


def _stale(path: str, match) -> bool:
    if match["host"] != _host():
        try:
            return time.time() - os.stat(path).st_mtime > FOREIGN_TEMP_AGE_S
        except OSError:
            return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return path not in _writing
    return not _alive(pid)


def remove_stale_temps(folder: str) -> list[str]:
    """Remove the temporary files of rnnc's naming in ``folder`` whose writer is gone (see the module
    docstring); returns their paths. Files of other programs, and of writers still alive, are left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False) or not _stale(entry.path, match):
            continue
        try:
            os.unlink(entry.path)
            removed.append(entry.path)
        except OSError:   # gone already, or a read-only folder: nothing to do
            pass
    return removed


def atomic_write(path: str, write, suffix: str) -> None:
    """Call ``write(f)`` on a new temporary file beside ``path``, then rename it to ``path``: readers see the old
    file or the complete new one. Stale temporary files in the folder are removed first."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".rnnc-tmp-{_host()}-{os.getpid()}-", suffix=suffix, dir=folder)
    _writing.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        _writing.discard(tmp)


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def show(value) -> str:
    """A value as an error message quotes it: its repr, on one line, at most 80 characters."""
    return one_line(repr(value), 80)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def _depth(text: str) -> int:
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def json_items(value, root: str = ""):
    """Every (field path, value) in a parsed JSON value, parents first: ``spec.layers[2].units``. Iterative."""
    stack = [(root, value)]
    while stack:
        where, v = stack.pop()
        yield where, v
        if isinstance(v, dict):
            stack.extend((f"{where}.{k}" if where else str(k), a) for k, a in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", a) for i, a in reversed(list(enumerate(v))))


def _undecodable_field(text: str) -> str | None:
    """The first field whose name or text holds a byte that is not UTF-8 (decoded with surrogateescape)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    for where, v in json_items(value):
        keys = v.keys() if isinstance(v, dict) else ()
        if any(_escaped(k) for k in keys) or (isinstance(v, str) and _escaped(v)):
            return where or "(top level)"
    return None


def _escaped(s: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in s)


def parse_json(path: str, data: bytes, what: str):
    """Parse untrusted JSON ``data`` read from ``path`` (``what`` says which part: "metadata", "model spec")."""
    if len(data) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: {what}: {len(data)} bytes of JSON; rnnc reads at most {MAX_JSON_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = _undecodable_field(data.decode("utf-8", "surrogateescape"))
        field = f"field {where}: " if where else ""
        raise CheckpointError(f"{path}: {what}: {field}not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                              f"{e.start})") from None
    depth = _depth(text)
    if depth > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path}: {what}: JSON nested {depth} levels deep; rnnc reads at most "
                              f"{MAX_JSON_DEPTH}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:   # JSONDecodeError, or an integer of too many digits
        raise CheckpointError(f"{path}: {what}: not valid JSON ({one_line(e)})") from None
