"""Handles the user indexes: sequence inputs and signals. ``h[t-1]`` builds a reference node;
``h[t] = expr`` defines a signal."""
from __future__ import annotations

from rnnc.errors import GraphError, ShapeError
from rnnc.ir.node import Axis, AxisShift, Node, sort_axes, user_line
from rnnc.ops import as_node, make, ref
from rnnc.ops.leaves import check_delay


def parse_index(owner: str, index) -> tuple[tuple, Axis | None, int]:
    """``t`` / ``t-1`` / ``(i-1, j)`` -> (axes, shifted axis or None, offset)."""
    items = index if isinstance(index, tuple) else (index,)
    axes, shift = [], []
    for it in items:
        if isinstance(it, Axis):
            axes.append(it)
        elif isinstance(it, AxisShift):
            axes.append(it.axis)
            if it.offset:
                shift.append(it)
        else:
            raise GraphError(f"{owner}[...] takes loop axes such as t, t-1, (i-1, j); got {it!r} "
                             f"at {user_line()}")
    if len(set(axes)) != len(axes):
        raise GraphError(f"{owner}[...] names an axis twice at {user_line()}")
    if len(shift) > 1:
        raise GraphError(f"{owner}[{', '.join(map(repr, items))}]: shift one axis at a time "
                         f"at {user_line()}")
    if shift:
        check_delay(f"{owner}[{', '.join(map(repr, items))}]", shift[0].offset)
        return sort_axes(axes), shift[0].axis, shift[0].offset
    return sort_axes(axes), None, 0


class Value:
    """Common behaviour of indexable values: arithmetic uses the value at the current index."""

    name: str
    shape: tuple
    dtype: str

    def _axes(self):
        raise NotImplementedError

    def __rnnc_node__(self) -> Node:
        return self[self._axes()] if self._axes() else self._node_without_axes()

    def _node_without_axes(self) -> Node:
        raise GraphError(f"{self.name} has no loop axes yet; index it (e.g. {self.name}[t]) at {user_line()}")

    def last(self, axis: Axis) -> Node:
        """The value at the last index of ``axis`` (each sample's own last step with lengths)."""
        return make("last", [self.__rnnc_node__()], axis=axis)

    def first(self, axis: Axis) -> Node:
        """The value at index 0 of ``axis``."""
        return make("first", [self.__rnnc_node__()], axis=axis)

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        return getattr(self.__rnnc_node__(), item)


def _arith(name):
    def method(self, *args):
        return getattr(as_node(self), name)(*args)
    return method


for _m in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
           "__rtruediv__", "__neg__", "__matmul__", "__rmatmul__"):
    setattr(Value, _m, _arith(_m))


class InputValue(Value):
    """A per-index input such as ``x[t]``; its runtime array is ``(*axis sizes, B, *shape)``."""

    def __init__(self, model, node: Node):
        self.model, self.node, self.name = model, node, node.name
        self.shape, self.dtype = node.shape, node.dtype

    def _axes(self):
        return self.node.axes

    def __getitem__(self, index) -> Node:
        axes, axis, offset = parse_index(self.name, index)
        if set(axes) != set(self.node.axes):
            raise GraphError(f"input {self.name!r} has axes ({', '.join(a.name for a in self.node.axes)}) "
                             f"but is indexed with ({', '.join(a.name for a in axes)}) at {user_line()}")
        return ref(self.name, self.node.axes, self.shape, self.dtype, True, axis, offset)

    def __repr__(self):
        return f"<input {self.name}[{','.join(a.name for a in self.node.axes)}] {self.shape}>"


class Signal(Value):
    """A value defined by one equation, ``s[axes] = expr``; reading it out of range gives its initial value."""

    def __init__(self, model, name: str, shape: tuple, where: str, axes=None):
        self.model, self.name, self.shape, self.dtype = model, name, shape, "float"
        self.where = where
        self.axes = sort_axes(axes) if axes is not None else None
        self.definition: Node | None = None
        self.defined_at: str | None = None
        self.reads: list[Node] = []

    def _axes(self):
        return self.axes

    def __getitem__(self, index) -> Node:
        axes, axis, offset = parse_index(self.name, index)
        if self.axes is not None and set(axes) != set(self.axes):
            raise GraphError(f"signal {self.name!r} has axes ({', '.join(a.name for a in self.axes)}) but is "
                             f"indexed with ({', '.join(a.name for a in axes)}) at {user_line()}")
        node = ref(self.name, axes, self.shape, "float", True, axis, offset)
        self.reads.append(node)
        return node

    def __setitem__(self, index, expr) -> None:
        where = user_line()
        axes, axis, offset = parse_index(self.name, index)
        if axis is not None:
            raise GraphError(f"the left side of {self.name}'s equation indexes plain axes ({self.name}[t]), "
                             f"not shifted ones, at {where}")
        if self.definition is not None:
            raise GraphError(f"signal {self.name!r} is defined twice: at {self.defined_at} and at {where}")
        if self.axes is not None and set(axes) != set(self.axes):
            raise GraphError(f"signal {self.name!r} was read with axes ({', '.join(a.name for a in self.axes)})"
                             f" but defined over ({', '.join(a.name for a in axes)}) at {where}")
        node = as_node(expr)
        if node.shape != self.shape:
            raise ShapeError(f"signal {self.name!r} has shape {self.shape} but its equation gives "
                             f"{node.shape} at {where}")
        extra = [a.name for a in node.axes if a not in axes]
        if extra:
            raise GraphError(f"the equation of {self.name}[{', '.join(a.name for a in axes)}] varies along "
                             f"{', '.join(extra)}, which its left side does not index, at {where}")
        self.axes = axes
        self.definition, self.defined_at = node, where
        self.model._changed()

    def __repr__(self):
        axes = ",".join(a.name for a in self.axes) if self.axes is not None else "?"
        return f"<signal {self.name}[{axes}] {self.shape}>"
