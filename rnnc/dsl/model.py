"""``Model``: the user's recurrent network, written equation by equation.

>>> import rnnc as rc
>>> from rnnc import t
>>> m = rc.Model("elman")
>>> x = m.input("x", 3)
>>> W = m.param("W", (4, 4)); U = m.param("U", (4, 3))
>>> h = m.signal("h", 4)
>>> h[t] = rc.tanh(U @ x[t] + W @ h[t-1])
>>> m.output("h", h[t])
>>> [s.kind for s in rc.schedule(m)]
['map', 'scan']
"""
from __future__ import annotations

import zlib

import numpy as np

from rnnc.dsl import init as inits
from rnnc.dsl.values import InputValue, Signal, Value
from rnnc.errors import GraphError, ShapeError
from rnnc.ir.names import check_name
from rnnc.ir.node import Axis, Node, user_line
from rnnc.ops import as_node, leaf

t = Axis("t")


def axes(*names: str) -> tuple[Axis, ...]:
    """Declare loop axes: ``i, j = rc.axes("i", "j")`` (each name checked by :func:`check_name`)."""
    for n in names:
        check_name(n, "axis")
    return tuple(Axis(n) for n in names)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def as_shape(shape, what: str = "value") -> tuple:
    """A user's shape: an int or a tuple / list of ints, each >= 1 (``()`` for a scalar)."""
    dims = (shape,) if _is_int(shape) else shape
    if not isinstance(dims, (tuple, list)) or not all(_is_int(s) and s >= 1 for s in dims):
        raise ShapeError(f"{what}: shape must be a positive int or a tuple of positive ints, got {shape!r} "
                         f"at {user_line()}")
    return tuple(int(s) for s in dims)


def as_axes(axes, what: str) -> tuple[Axis, ...]:
    """A user's loop axes: an :class:`Axis` or a tuple / list of distinct ones (``rc.t``, ``rc.axes("i")``)."""
    items = (axes,) if isinstance(axes, Axis) else axes
    if not isinstance(items, (tuple, list)) or not all(isinstance(a, Axis) for a in items):
        bad = next((a for a in items if not isinstance(a, Axis)), None) if isinstance(items, (tuple, list)) else axes
        raise GraphError(f"{what}: axes must be rc.Axis values such as rc.t or those of rc.axes('i'), got {bad!r} "
                         f"({type(bad).__name__}) at {user_line()}")
    if len(set(items)) != len(items):
        raise GraphError(f"{what}: axes {tuple(items)} name an axis twice at {user_line()}")
    return tuple(items)


class Model:
    """A recurrent model: inputs, params, signals defined by equations, outputs and a loss.

    Parameters
    ----------
    name : str
        A Python identifier naming the model.
    """

    def __init__(self, name: str = "model"):
        self.name = name
        self.where = user_line()
        self.inputs: dict[str, Node] = {}
        self.params: dict[str, Node] = {}
        self.param_inits: dict = {}
        self.signals: dict[str, Signal] = {}
        self.outputs: dict[str, Node] = {}
        self.loss_terms: list[Node] = []
        self.initials: dict[str, Node] = {}
        self.lengths: dict[Axis, str] = {}
        self._graph = None

    @property
    def name(self) -> str:
        """The model's name; setting it checks it again (:func:`check_name`) and drops the lowered graph."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = check_name(value, "model")
        self._graph = None

    # ------------------------------------------------------------------ declarations
    def _claim(self, name: str, what: str) -> str:
        """Check ``name`` for a new ``what``: a valid name used by no other input, param, signal or output,
        except that an output may share a signal's name (``m.output("h", h[t])``): outputs are looked up only
        among outputs (the result's ``outputs`` dict), so the two never meet."""
        check_name(name, what)
        for kind, table in (("input", self.inputs), ("param", self.params), ("signal", self.signals),
                            ("output", self.outputs)):
            if {what, kind} == {"output", "signal"}:
                continue
            if name in table:
                raise GraphError(f"{what} name {name!r} is already used by a {kind} of model "
                                 f"{self.name!r} (at {user_line()})")
        return name

    def _changed(self):
        self._graph = None

    def input(self, name: str, shape=(), dtype: str = "float", axes=(t,), lengths: bool = False):
        """Declare an input.

        A sequence input (default ``axes=(t,)``) is read as ``x[t]``; its array is ``(T, B, *shape)``. A
        per-sample input (``axes=()``, e.g. an image) is used directly; its array is ``(B, *shape)``.
        With ``lengths=True`` a ``(B,)`` integer array ``<name>_lengths`` gives each sample's length along
        the input's axis: state stops changing past it and nothing is added to the loss there.
        """
        self._claim(name, "input")
        if dtype not in ("float", "int", "int64", "float32", "float64"):
            raise ValueError(f"input {name!r}: dtype must be 'float' or 'int', got {dtype!r} at {user_line()}")
        dtype = "int" if dtype.startswith("int") else "float"
        ax = as_axes(axes, f"input {name!r}")
        node = leaf("input", name, as_shape(shape, f"input {name!r}"), dtype, ax, True)
        self.inputs[name] = node
        if lengths:
            if len(ax) != 1:
                raise GraphError(f"input {name!r}: lengths apply to an input with exactly one axis")
            if ax[0] in self.lengths:
                raise GraphError(f"axis {ax[0].name!r} already has lengths from input "
                                 f"{self.lengths[ax[0]]!r} (at {user_line()})")
            lname = self._claim(f"{name}_lengths", "input")
            self.inputs[lname] = leaf("lengths", lname, (), "int", (), True)
            self.lengths[ax[0]] = lname
        self._changed()
        return InputValue(self, node) if ax else node

    def param(self, name: str, shape, init=None) -> Node:
        """Declare a trainable parameter (no loop axes, shared by every sample and step)."""
        self._claim(name, "param")
        shape = as_shape(shape, f"param {name!r}")
        self.param_inits[name] = inits.resolve(init, shape, name)
        self.params[name] = leaf("param", name, shape, "float", (), False)
        self._changed()
        return self.params[name]

    def signal(self, name: str, shape=(), axes=None) -> Signal:
        """Declare a signal, defined by one equation ``s[t] = expr``; its axes are the left side's."""
        self._claim(name, "signal")
        shape = as_shape(shape, f"signal {name!r}")
        axes = as_axes(axes, f"signal {name!r}") if axes is not None else None
        self.signals[name] = Signal(self, name, shape, user_line(), axes)
        self._changed()
        return self.signals[name]

    def output(self, name: str, expr) -> Node:
        """Name a value as a model output (returned by ``interpret`` / ``forward``); the name may be a
        signal's (``m.output("h", h[t])``), not an input's or a param's."""
        self._claim(name, "output")
        self.outputs[name] = as_node(expr)
        self._changed()
        return self.outputs[name]

    def loss(self, expr) -> Node:
        """Add a per-step, per-sample scalar loss term; the model's loss sums terms over loop axes and
        averages over the batch: :math:`L = \\frac{1}{B}\\sum_b \\sum_t \\ell_t^{(b)}`."""
        node = as_node(expr)
        if node.shape != ():
            raise ShapeError(f"a loss term must be a scalar per step and sample, got shape {node.shape} "
                             f"at {user_line()}")
        self.loss_terms.append(node)
        self._changed()
        return node

    def initial(self, signal, value) -> None:
        """Set a signal's initial value: what reading it before its first index gives (default zeros).

        ``value`` is any axis-free value: a param, a per-sample input, or a reduction such as ``h.last(t)``.
        """
        sig = self.signals.get(signal) if isinstance(signal, str) else signal
        if not isinstance(sig, Signal) or self.signals.get(sig.name) is not sig:
            raise GraphError(f"initial(): {signal!r} is not a signal of model {self.name!r} at {user_line()}")
        node = as_node(value)
        if node.axes:
            raise GraphError(f"the initial value of {sig.name!r} must be axis-free, but {node.label()} varies "
                             f"along {', '.join(a.name for a in node.axes)} at {user_line()}")
        try:
            ok = np.broadcast_shapes(node.shape, sig.shape) == sig.shape
        except ValueError:
            ok = False
        if not ok:
            raise ShapeError(f"initial value of {sig.name!r}: shape {node.shape} does not broadcast to "
                             f"{sig.shape} at {user_line()}")
        self.initials[sig.name] = node
        self._changed()

    # ------------------------------------------------------------------ views
    @property
    def graph(self):
        """The lowered, validated IR (:class:`rnnc.ir.Graph`)."""
        if self._graph is None:
            from rnnc.dsl.lower import lower

            self._graph = lower(self)
        return self._graph

    def unroll(self, **sizes: int):
        """The acyclic unrolled graph for the given axis sizes, e.g. ``m.unroll(t=4)``."""
        from rnnc.schedule.unroll import unroll

        return unroll(self.graph, sizes)

    def init_params(self, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
        """Fresh parameter arrays, reproducible for a seed (each param draws from its own stream)."""
        return init_params(self.graph, seed, dtype)

    def _repr_svg_(self) -> str:
        from rnnc.viz import to_dot

        return to_dot(self).pipe(format="svg").decode()

    def __repr__(self) -> str:
        return (f"<Model {self.name}: {len(self.inputs)} inputs, {len(self.params)} params, "
                f"{len(self.signals)} signals, {len(self.outputs)} outputs>")


def init_params(graph, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
    out = {}
    for name, node in sorted(graph.params.items()):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        out[name] = inits.initial_value(graph.param_inits[name], rng, node.shape, np.dtype(dtype))
    return out


__all__ = ["Model", "Value", "t", "axes"]
