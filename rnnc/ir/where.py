"""Where the user is: ``file:line`` of the innermost frame outside the rnnc package, for error messages and the
comments of generated code.

Nodes rnnc makes itself (a gradient's equations, the loss's sums) take the location of the user's node they
come from, set with :func:`at`, not the line of the call that happened to build them (``rc.compile(...)``)."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


#: the location nodes made now take, set by :func:`at` ("" when none is set)
_AT: ContextVar = ContextVar("rnnc_at", default="")


@contextmanager
def at(where: str):
    """Nodes made inside this block (by rnnc itself) take ``where``, a user's node's ``file:line``: the
    gradient of ``h[t] = tanh(...)`` points at that line, not at the ``rc.compile`` call that derived it."""
    token = _AT.set(where)
    try:
        yield
    finally:
        _AT.reset(token)


def user_line() -> str:
    """Return ``file:line`` of the innermost stack frame outside the rnnc package (the user's code), or the
    location :func:`at` set."""
    if _AT.get():
        return _AT.get()
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if not os.path.abspath(path).startswith(_PACKAGE_DIR + os.sep) and not _generated_init(frame):
            return f"{path}:{frame.f_lineno}"
        frame = frame.f_back
    return "<rnnc>"


def _generated_init(frame) -> bool:
    """Is ``frame`` the ``__init__`` that ``dataclass`` wrote for a class of rnnc (``rc.Axis("i")``)?"""
    if frame.f_code.co_filename != "<string>" or frame.f_code.co_name != "__init__":
        return False
    return type(frame.f_locals.get("self")).__module__.startswith("rnnc.")
