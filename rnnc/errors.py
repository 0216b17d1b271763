"""Errors rnnc raises for bad models and bad input.

Every error names the thing at fault and, for DSL mistakes, the user's own ``file:line``.
"""


class RnncError(Exception):
    """Base class of rnnc's errors."""


class GraphError(RnncError):
    """A model's structure is wrong: undefined or twice-defined signal, bad axes, bad recurrence."""


class CycleError(GraphError):
    """An algebraic loop: a cycle with no delayed reference on it."""


class ShapeError(RnncError, ValueError):
    """Shapes do not fit an op's shape rule."""


class InputError(RnncError, ValueError):
    """An array, state or size handed to a compiled or interpreted model is out of range: a class index past
    the logits, a length past its axis, a history shorter than a delay, a non-positive size, a NaN.

    The message is one line naming the input, the bad value, where it is and what would be valid.
    """
