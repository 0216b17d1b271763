"""The op table: every op's rules in one place.

An :class:`OpDef` holds an op's shape rule, its numpy reference, its VJP (built from rnnc ops, so gradients
are graphs too), its properties (elementwise, row-local, leaf, differentiable...) and, for elementwise ops,
its scalar form (:mod:`rnnc.ops.scalar`), from which the CPU and CUDA backends write their loops. Passes and
backends never keep lists of op names: they ask the table (:func:`ops_with`). ``make`` builds a node from an op
name and checks it.
"""
from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from rnnc.errors import GraphError, ShapeError
from rnnc.ir.names import check_name
from rnnc.ir.node import Node, sort_axes, user_line
from rnnc.ops.scalar import Expr, ScalarFormError, make_form

OPS: dict[str, OpDef] = {}


@dataclass(frozen=True)
class OpDef:
    """Rules and properties of one op.

    shape(inputs, attrs) -> (shape, dtype); raise :class:`ShapeError` via :func:`shape_error` on misfit.
    numpy(node, *arrays) -> array; the reference. With ``aligned`` (the default) every input array is given in
    the node's own lead layout (missing axes / batch as size-1 dims), followed by the input's feature dims.
    Without it, arrays come in their own layouts and the function receives ``ctx`` (axis sizes) too.
    vjp(node, g) -> one adjoint node (or None) per input, each shaped like that input.
    axes(inputs, attrs) -> (axes, batched); default: union of the inputs' axes, batched if any input is.

    Properties, read by passes and backends through :func:`ops_with`:

    * ``elementwise``: each output element depends on the same element of each (broadcast) input;
    * ``scalar_cpu`` / ``scalar_cuda``: the per-element form (an :class:`~rnnc.ops.scalar.Expr`) the backends
      render; an op with one is *fusable* (a fused loop body inlines it) and an *alias reader* (its CPU loop reads
      every input through ``Buf.at``, so an input may be an offset view of another array). Every elementwise op
      has one (checked by :func:`register`); ``scalar_cuda`` defaults to ``scalar_cpu``;
    * ``arithmetic``: cheap enough (no transcendental call) to recompute in a scan instead of storing it;
    * ``row_local``: its CPU template indexes the batch only through the renderer's lead ranges, so a scan of
      such ops runs as independent row blocks of the batch;
    * ``cuda_reuses_cpu``: its CPU template writes each output element once from a plain loop nest, so it runs
      unchanged as a one-thread-per-element CUDA kernel;
    * ``leaf``: bound by the caller or the renderer (input, param, lengths, const), no code of its own;
    * ``differentiable``: False for ops whose output carries no gradient (a mask, a constant, a lookup of
      integers);
    * ``indexes(node)``: (input position, highest valid value, what) for each integer operand that indexes
      something, range-checked at the runtime boundary (:mod:`rnnc.interpret.boundary`);
    * ``collective``: a reduction across the ranks of a data-parallel run (:mod:`rnnc.ops.collective`): every
      rank executes it in the same order, between two stages (``run`` calls it on the CPU); never folded,
      fused or moved into a loop, and refused by a backend that cannot call it;
    * ``flops(node)``: the floating-point operations of a product op (a multiply-add is 2) per element of its
      loop space, i.e. per loop index and batch sample of the node and its inputs; read by :func:`rnnc.flops`.
    """

    name: str
    shape: Callable
    numpy: Callable
    vjp: Callable | None = None
    axes: Callable | None = None
    aligned: bool = True
    elementwise: bool = False
    scalar_cpu: Expr | None = None
    scalar_cuda: Expr | None = None
    arity: int | None = None
    arithmetic: bool = False
    row_local: bool = False
    cuda_reuses_cpu: bool = False
    leaf: bool = False
    differentiable: bool = True
    indexes: Callable | None = None
    collective: bool = False
    flops: Callable | None = None

    @property
    def fusable(self) -> bool:
        """Has a scalar form, so a fused program can hold it (see :mod:`rnnc.passes.fuse`)."""
        return self.scalar_cpu is not None

    @property
    def alias_reader(self) -> bool:
        """Its CPU loop reads every input through ``Buf.at`` (the scalar-form loops, and fused programs)."""
        return self.scalar_cpu is not None or self.name == "fused"


PROPERTIES = frozenset(f.name for f in fields(OpDef)) | {"fusable", "alias_reader"}


def register(name: str, shape, numpy, vjp=None, axes=None, aligned=True, elementwise=False, *,
             scalar_cpu=None, scalar_cuda=None, arity=None, **props) -> OpDef:
    """Add an op to the table (rnnc's own ops; users call :func:`rnnc.register_op`).

    ``scalar_cpu`` / ``scalar_cuda`` are scalar forms (a function of scalar operands, an expression's text or an
    :class:`~rnnc.ops.scalar.Expr`); ``props`` are the boolean properties of :class:`OpDef`, ``indexes`` and ``flops``.
    An elementwise op without a scalar form is refused here, naming it: it would have no fused loop.
    """
    check_name(name, "op")
    if name in OPS:
        raise ValueError(f"op {name!r} is registered twice")
    unknown = set(props) - PROPERTIES
    if unknown:
        raise TypeError(f"op {name!r}: unknown propert{'ies' if len(unknown) > 1 else 'y'} {sorted(unknown)}")
    what = f"scalar form of op {name!r}"
    names = tuple("xyz"[:arity]) if arity and arity <= 3 else tuple(f"x{k}" for k in range(arity or 0))
    cpu = cuda = None
    try:
        if scalar_cpu is not None:
            cpu, arity = make_form(scalar_cpu, arity, names, what)
        if scalar_cuda is not None:
            cuda, arity = make_form(scalar_cuda, arity, names, f"CUDA {what}")
    except ScalarFormError as e:
        raise ValueError(str(e)) from None
    if cpu is not None:      # the scalar-form loop indexes the batch by lead ranges and writes each element once
        props.setdefault("row_local", True)
        props.setdefault("cuda_reuses_cpu", True)
    if elementwise and cpu is None and name != "fused":
        raise ValueError(f"elementwise op {name!r} has no scalar form (scalar_cpu=): the backends could not "
                         f"fuse it or run it in row blocks")
    OPS[name] = OpDef(name, shape, numpy, vjp, axes, aligned, elementwise, cpu, cuda or cpu, arity, **props)
    return OPS[name]


def opdef(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise GraphError(f"unknown op {name!r}") from None


class OpSet(Set):
    """The names of the ops with some properties, read from :data:`OPS` at each use (so ops registered later,
    a user's among them, belong as soon as they exist). ``"fused" in ops_with(row_local=True)``."""

    def __init__(self, props: dict):
        self.props = dict(props)

    def _match(self, spec: OpDef) -> bool:
        return all(getattr(spec, k) == v for k, v in self.props.items())

    def __contains__(self, op) -> bool:
        spec = OPS.get(op) if isinstance(op, str) else None
        return spec is not None and self._match(spec)

    def __iter__(self):
        return iter(sorted(name for name, spec in list(OPS.items()) if self._match(spec)))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def _from_iterable(cls, it):
        return frozenset(it)

    def __hash__(self):
        return hash(tuple(sorted(self.props.items())))

    def __repr__(self):
        return f"ops_with({', '.join(f'{k}={v!r}' for k, v in self.props.items())})"


def ops_with(**props) -> OpSet:
    """The (live) set of op names whose :class:`OpDef` has every given property value."""
    unknown = set(props) - PROPERTIES
    if unknown:
        raise TypeError(f"ops_with: unknown propert{'ies' if len(unknown) > 1 else 'y'} {sorted(unknown)}")
    return OpSet(props)


#: the leaf ops (input, param, lengths, const): bound by the caller or the renderer, no code of their own
LEAVES = ops_with(leaf=True)


def shape_error(op: str, inputs, why: str) -> ShapeError:
    shapes = ", ".join(f"{n.label()}: {n.shape}" for n in inputs)
    return ShapeError(f"{op}: {why} (shapes {shapes}) at {user_line()}")


def as_node(x: Any) -> Node:
    """Turn a python number or a DSL value handle into a node."""
    if isinstance(x, Node):
        return x
    if hasattr(x, "__rnnc_node__"):
        return x.__rnnc_node__()
    if isinstance(x, (bool, np.bool_)):
        x = float(x)
    if isinstance(x, (int, float, np.integer, np.floating)):
        return Node("const", (), {"value": float(x)}, (), "float", (), False, user_line())
    raise TypeError(f"cannot use {type(x).__name__} {x!r} in an rnnc expression at {user_line()}")


def shared_axes(inputs, attrs) -> tuple[tuple, bool]:
    """Axes rule of a value shared by every sample and loop index (a reduction over all of them, a constant)."""
    return (), False


def default_axes(inputs, attrs, op: str = "") -> tuple[tuple, bool]:
    """Union of the inputs' axes; inputs' axis sets must nest (axis-free values broadcast)."""
    sets = sorted((frozenset(n.axes) for n in inputs), key=len)
    for small, big in zip(sets, sets[1:]):
        if not small <= big:
            names = ", ".join(f"{n.label()}[{','.join(a.name for a in n.axes)}]" for n in inputs)
            raise GraphError(f"{op}: cannot mix values on unrelated axes ({names}) at {user_line()}")
    axes = sort_axes(a for n in inputs for a in n.axes)
    return axes, any(n.batched for n in inputs)


def make(op: str, inputs, name: str | None = None, where: str | None = None, **attrs) -> Node:
    """Build and check a node: apply ``op`` to ``inputs`` with ``attrs``."""
    spec = opdef(op)
    inputs = tuple(as_node(x) for x in inputs)
    if spec.arity is not None and len(inputs) != spec.arity:
        raise GraphError(f"{op} takes {spec.arity} operand(s), given {len(inputs)} at {user_line()}")
    axes, batched = (spec.axes or (lambda i, a: default_axes(i, a, op)))(inputs, attrs)
    shape, dtype = spec.shape(inputs, attrs)
    return Node(op, inputs, attrs, tuple(int(s) for s in shape), dtype, axes, batched,
                where or user_line(), name)


def float_dtype(inputs) -> str:
    return "float" if any(n.dtype == "float" for n in inputs) or not inputs else "int"
