"""The checked boundary between a caller's arrays and either engine.

Every array, size and state a model is handed passes here before anything is computed — in the interpreter
and in a compiled kernel alike, so the two refuse the same inputs with the same one-line
:class:`~rnnc.errors.InputError`:

* sizes (``sizes=``, ``batch=``, and the sizes the arrays imply) are positive integers;
* every integer input that *indexes* something is in range: a class label read by ``softmax_cross_entropy``
  lies in ``0 .. classes - 1``, an index read by ``one_hot`` in ``0 .. classes - 1``, a row read by
  ``embedding`` in ``0 .. rows - 1`` (each op's ``indexes`` rule in the op table), a length
  ``<input>_lengths`` in ``1 .. size of its axis`` (at every position the kernel reads, padded steps
  included); an unsigned 64-bit value past the int64 range is refused, never wrapped;
* a state handed to ``step`` holds, for each delayed value, exactly the history its delays read, laid out
  ``(depth, B, *shape)``;
* with ``check_finite=True``, no float input, param or state holds NaN or Inf.

Which inputs index something is read off the graph once (:func:`index_plan`, cached per graph): the label
operand of each ``softmax_cross_entropy``, the operand of each ``one_hot``, each lengths leaf, traced back
through the ops that only move integers (a reference ``y[t-1]``, ``last``, a reshape...) to the input that
feeds them. An index computed from integer inputs by arithmetic (``y[t] + y[t]``) is computed in numpy and
checked; one that depends on float values is refused when the plan is made. The per-call check is a min and
a max over each index array; positions are searched only when a value is out of range.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from rnnc.errors import GraphError, InputError
from rnnc.ir.graph import Graph, topo_order
from rnnc.ir.node import Axis, Node
from rnnc.ops.registry import opdef

#: ops that pass integer values through unchanged (a selection, a move or a delay); 0 is what a delayed read
#: gives before the start, and it is in range for every index op
_PASS = frozenset({"ref", "last", "first", "reshape", "slice"})


@dataclass(frozen=True)
class IndexCheck:
    """``operand`` (an input leaf, or an integer node computed from inputs) must lie in ``[low, high]``;
    ``high`` is an int, or an :class:`Axis` whose size it is (lengths)."""

    operand: Node
    low: int
    high: int | Axis
    what: str           # "class label of softmax_cross_entropy (at model.py:12)"
    sources: tuple      # the names of the inputs the operand's values come from

    @property
    def source(self) -> str:
        return ", ".join(map(repr, self.sources))


@dataclass(frozen=True)
class Plan:
    """What the boundary checks for one graph: index checks on leaves, and on computed integer nodes."""

    leaves: tuple       # IndexCheck whose operand is an input / lengths leaf
    computed: tuple     # IndexCheck whose operand is an integer node computed from inputs

    @property
    def index_inputs(self) -> frozenset:
        """Names of the inputs an index check reads (directly or through a computation)."""
        return frozenset(name for c in self.leaves + self.computed for name in c.sources)


_PLANS: weakref.WeakKeyDictionary[Graph, Plan] = weakref.WeakKeyDictionary()


def index_plan(graph: Graph) -> Plan:
    """The index checks of ``graph`` (see the module docstring), made once per graph."""
    plan = _PLANS.get(graph)
    if plan is None:
        plan = _PLANS[graph] = _make_plan(graph)
    return plan


def _make_plan(graph: Graph) -> Plan:
    leaves = [IndexCheck(node, 1, axis, f"length along axis {axis.name!r}", (node.name,))
              for axis, node in graph.lengths.items()]
    computed = []
    # the loss's label first: where a gradient's one_hot reads the same labels, the user's own op is named
    ops = sorted(graph.nodes, key=lambda n: n.op != "softmax_cross_entropy")
    for node in ops:
        for operand, high, what in _index_operands(node):
            root, sources = _trace(graph, operand, what)
            (leaves if root.op in ("input", "lengths") else computed).append(IndexCheck(root, 0, high, what, sources))
    return Plan(_tightest(leaves), _tightest(computed))


def _index_operands(node: Node):
    """(operand, highest valid value, description) for each integer operand of ``node`` that indexes: the op
    table's ``indexes`` rule (softmax_cross_entropy's labels, one_hot's and embedding's indices...)."""
    rule = opdef(node.op).indexes
    for pos, high, what in rule(node) if rule is not None else ():
        if node.inputs[pos].dtype == "int":
            yield node.inputs[pos], high, f"{what} (at {node.where})"


def _tightest(checks) -> tuple:
    """One check per (operand, low) pair: the smallest ``high`` wins (several index ops may read one input)."""
    best: dict = {}
    for c in checks:
        key = (c.operand, c.low)
        prev = best.get(key)
        if prev is None or (isinstance(c.high, int) and (isinstance(prev.high, Axis) or c.high < prev.high)):
            best[key] = c
    return tuple(best.values())


def _trace(graph: Graph, operand: Node, what: str) -> tuple[Node, tuple]:
    """The leaf ``operand`` copies its values from (through :data:`_PASS` ops), or ``operand`` itself when
    it computes them from integer inputs; with the input names it reads."""
    node = operand
    while node.op in _PASS:        # a reference reads its value; the others select from their first operand
        src = graph.values.get(node.attr("value")) if node.op == "ref" else node.inputs[0]
        if src is None:
            break
        node = src
    if node.op in ("input", "lengths"):
        return node, (node.name,)
    cone = _cone(graph, node)
    floats = [n for n in cone if n.dtype != "int"]
    if floats:
        raise GraphError(f"the {what} depends on float values ({floats[0].label()} at {floats[0].where}); rnnc "
                         "range-checks indices only when they come from integer inputs")
    return node, tuple(sorted(n.name for n in cone if n.op in ("input", "lengths")))


def _cone(graph: Graph, node: Node) -> list:
    """Every node ``node`` is computed from, references followed to the values they read; inputs first."""
    def read(n):
        v = graph.values.get(n.attr("value")) if n.op == "ref" else None
        return (v,) if v is not None else ()

    return topo_order([node], extra=read)


# ---------------------------------------------------------------------------------------------- sizes


def positive_int(value, what: str) -> int:
    """``value`` as an int if it is a positive integer (not a bool, not a float); else :class:`InputError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{what} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise InputError(f"{what} must be a positive integer, got {int(value)}")
    return int(value)


def check_sizes(sizes, batch) -> tuple[dict, int | None]:
    """``sizes=`` (axis name -> size) and ``batch=`` as handed to an engine, validated."""
    if sizes is not None and not isinstance(sizes, dict):
        raise InputError(f"sizes= must be a dict of axis name -> size, got {type(sizes).__name__}")
    out = {name: positive_int(v, f"sizes[{name!r}]") for name, v in (sizes or {}).items()}
    return out, None if batch is None else positive_int(batch, "batch=")


def as_int64(name: str, arr: np.ndarray) -> np.ndarray:
    """An integer input as int64, refusing unsigned values past the int64 range instead of wrapping them."""
    if arr.dtype.kind == "u" and arr.dtype.itemsize >= 8 and arr.size:
        limit = np.iinfo(np.int64).max
        if arr.max() > limit:
            pos = _first(arr > limit)
            raise InputError(f"input {name!r}: value {int(arr[pos])} at index {pos} does not fit int64; "
                             "indices must lie in the ranges the model reads")
    return arr.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------- indices


def check_binding(graph: Graph, binding, finite: bool | str = False) -> None:
    """The per-call checks of a bound call (see :func:`rnnc.interpret.bind.bind`): index ranges, and with
    ``finite`` NaN / Inf in the float inputs and params (``finite="params"``: in the params only — what the
    Trainer checks on each step, having checked its whole data set once)."""
    plan = index_plan(graph)
    for check in plan.leaves:
        arr = binding.arrays.get(check.operand)
        if arr is not None and arr.size:
            _in_range(check, arr, binding.sizes, f"input {check.source}")
    if plan.computed:
        env = dict(binding.arrays)
        for check in plan.computed:
            arr = _evaluate_int(graph, check.operand, env, binding)
            if arr is not None and arr.size:
                _in_range(check, arr, binding.sizes, f"the value computed from input {check.source}")
    if finite:
        for kind in ("params",) if finite == "params" else ("inputs", "params"):
            check_finite({name: binding.arrays[node] for name, node in getattr(graph, kind).items()
                          if node in binding.arrays}, kind[:-1] + " ")


def check_data(graph: Graph, data: dict, finite: bool = False) -> None:
    """Check a whole data set (input name -> array, laid out like a call's inputs with every sample on the
    batch axis) once, before training on it: the index inputs' ranges, and with ``finite`` NaN / Inf in the
    float inputs. Positions name the sample in the data set. Names ``graph`` does not read are ignored."""
    sizes = {}
    for name, node in graph.inputs.items():
        if name in data:
            for axis, n in zip(node.axes, np.shape(data[name])):
                sizes.setdefault(axis, n)
    for check in index_plan(graph).leaves:
        name = check.operand.name
        arr = np.asarray(data[name]) if name in data else None
        if arr is not None and arr.dtype.kind in "iu" and arr.size:
            _in_range(check, as_int64(name, arr), sizes, f"input {name!r}")
    if finite:
        check_finite({k: v for k, v in data.items() if k in graph.inputs}, "input ")


def _evaluate_int(graph: Graph, operand: Node, env: dict, binding):
    """``operand``'s array over its whole layout, computed in numpy from the integer inputs it reads (as a map
    stage would); None when one of them was not handed in."""
    from rnnc.interpret.evaluate import evaluate, initial_fill, shift

    for node in _cone(graph, operand):
        if node in env:
            continue
        if node.op in ("input", "lengths"):
            return None
        if node.op == "const":
            env[node] = np.asarray(node.attr("value"), dtype=np.int64)
        elif node.op == "ref":
            value = graph.value_of(node)
            arr, offset, axis = env[value], node.attr("offset"), node.attr("axis")
            if offset:
                init = env[node.inputs[0]] if node.inputs else None
                rest = tuple(a for a in value.axes if a != axis)
                fill = initial_fill(node, init, value, rest, binding.sizes, binding.batch, arr.dtype)
                arr = shift(arr, value.axes.index(axis), offset, fill)
            env[node] = arr
        else:
            env[node] = evaluate(node, [env[i] for i in node.inputs], [i.axes for i in node.inputs], node.axes,
                                 binding.sizes, binding.batch, binding.dtype)
    return env[operand]


def _in_range(check: IndexCheck, arr: np.ndarray, sizes: dict, who: str) -> None:
    high = sizes.get(check.high) if isinstance(check.high, Axis) else check.high
    if high is None:
        return
    lo, hi = arr.min(), arr.max()
    if lo >= check.low and hi <= high:
        return
    pos = _first((arr < check.low) | (arr > high))
    valid = f"{check.low}..{high}" if high >= check.low else "none"
    raise InputError(f"{who}: {int(arr[pos])} at index {pos} is out of range for the {check.what}; valid: {valid}")


def _first(mask: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(mask)[0])


# ---------------------------------------------------------------------------------------------- finite values


def check_finite(arrays: dict, kind: str = "") -> None:
    """Refuse NaN or Inf in any float array of ``arrays`` (name -> array), naming it and the first position."""
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind in "fc" and arr.size and not np.isfinite(arr).all():
            pos = _first(~np.isfinite(arr))
            raise InputError(f"{kind}{name!r} holds {arr[pos]} at index {pos} (check_finite=True)")


# ---------------------------------------------------------------------------------------------- step state


def state_batch(state) -> int | None:
    """The batch size a ``step`` state implies (its first batched history's second dimension), if any."""
    if isinstance(state, dict):
        for v in state.values():
            shape = np.shape(v)
            if len(shape) >= 2:
                return int(shape[1])
    return None


def check_state(state, expected: dict, dtype) -> dict:
    """The histories of a ``step`` state, checked: ``expected`` maps each delayed value's name to the layout
    ``(depth, [B], *shape)`` its history must have. Returns name -> contiguous array of ``dtype``, or {} at
    the start (``state`` None)."""
    if state is None:
        return {}
    if not isinstance(state, dict):
        raise InputError(f"step(): state must be None or the dict the previous step returned, got "
                         f"{type(state).__name__}")
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unknown or missing:
        raise InputError(f"step(): state has {sorted(state)}, the model's delayed values are {sorted(expected)}")
    out = {}
    for name, shape in expected.items():
        arr = np.asarray(state[name])
        where = f"step(): state {name!r}"
        if arr.ndim == 0:
            raise InputError(f"{where} is a scalar; expected the last {shape[0]} step(s), an array of shape {shape}")
        if arr.dtype.kind not in "fiu":
            raise InputError(f"{where}: expected real numbers, got dtype {arr.dtype}")
        if arr.shape != shape:
            raise InputError(f"{where}: expected shape {shape} (the last {shape[0]} step(s) its delays read"
                             f"{', batch, features' if len(shape) > 2 else ''}), got {arr.shape}")
        out[name] = np.ascontiguousarray(arr, dtype=dtype)
    return out


__all__ = ["IndexCheck", "Plan", "as_int64", "check_binding", "check_data", "check_finite", "check_sizes",
           "check_state", "index_plan", "positive_int", "state_batch"]
