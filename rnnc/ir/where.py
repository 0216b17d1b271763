"""Where the user is: ``file:line`` of the innermost frame outside the rnnc package, for error messages."""
from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_line() -> str:
    """Return ``file:line`` of the innermost stack frame outside the rnnc package (the user's code)."""
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
