"""Compiled models: ``rc.compile(m)`` and the kernels behind it."""
from rnnc.runtime.compiled import Compiled
from rnnc.runtime.targets import compile  # noqa: A004

__all__ = ["Compiled", "compile"]
