"""The public way to add an elementwise op: :func:`register_op`, from the user's own file.

One call gives the op everything rnnc's own ops have: the numpy reference the interpreter runs, the gradient
(a VJP built from rnnc ops), fusion into the loops around it, row blocks in a scan, the CPU and CUDA kernels
(both written from the op's scalar form) and drawings. See ``docs/extending.md``.
"""
from __future__ import annotations

from collections.abc import Callable

from rnnc.ops import scalar as S
from rnnc.ops.layout import pad_features
from rnnc.ops.reduce import sum_to
from rnnc.ops.registry import OPS, OpDef, as_node, float_dtype, make, register, shape_error


def register_op(name: str | Callable | None = None, *, scalar=None, numpy: Callable | None = None,
                vjp: Callable | None = None, scalar_cuda=None, arithmetic: bool = False,
                differentiable: bool = True, doc: str | None = None):
    """Add an elementwise op to rnnc; returns the function that applies it (``y = softplus(x)``).

    Used as a call, ``softplus = rc.register_op("softplus", scalar=..., numpy=..., vjp=...)``, or as a decorator
    on the scalar form, whose name becomes the op's and whose docstring the function's::

        @rc.register_op(numpy=lambda x: np.logaddexp(0.0, x), vjp=lambda g, y, x: g * rc.sigmoid(x))
        def softplus(x):
            return maximum(x, 0.0) + log1p(exp(-abs(x)))     # helpers from rnnc.ops.scalar

    Parameters
    ----------
    name : str
        The op's name: a Python identifier (:func:`rnnc.ir.names.check_name`), not already registered.
    scalar : callable or str
        The value of one output element from one element of each operand (operands broadcast as in numpy), in
        the language of :mod:`rnnc.ops.scalar`: a function of one parameter per operand, or an expression's text
        over the names ``x, y, z`` (one operand: ``x``). rnnc traces it to an expression tree and writes the CPU
        and CUDA loops from that tree; nothing of the text is pasted into generated code.
    numpy : callable, optional
        ``numpy(*arrays) -> array``, the reference the interpreter runs (arrays already broadcast-aligned).
        Default: the scalar form evaluated with numpy.
    vjp : callable, optional
        ``vjp(g, y, *operands)`` -> one adjoint per operand (or one value for a one-operand op), built from rnnc
        ops on the output's adjoint ``g``, the output ``y`` and the operands; None for an operand without one.
        Each adjoint is summed back to its operand's shape (broadcasting). Without it, differentiating through
        the op is refused, naming it.
    scalar_cuda : callable or str, optional
        A different scalar form for the CUDA backend (default: ``scalar``).
    arithmetic : bool
        The form is cheap (no transcendental call), so a scan may recompute it instead of reading it back.
    differentiable : bool
        False for an op whose output carries no gradient (a mask): nothing flows back through it.
    doc : str, optional
        The docstring of the returned function.
    """
    if scalar is None:
        def decorate(fn: Callable):
            return register_op(name if isinstance(name, str) else fn.__name__, scalar=fn, numpy=numpy, vjp=vjp,
                               scalar_cuda=scalar_cuda, arithmetic=arithmetic, differentiable=differentiable,
                               doc=doc if doc is not None else fn.__doc__)
        return decorate(name) if callable(name) and not isinstance(name, str) else decorate
    if not isinstance(name, str):
        raise TypeError(f"register_op: the op's name is a str, not {type(name).__name__}")
    for what, fn in (("numpy", numpy), ("vjp", vjp)):
        if fn is not None and not callable(fn):
            raise TypeError(f"register_op({name!r}): {what}= must be a function, not {type(fn).__name__}")
    if isinstance(scalar, str):
        expr, arity = _text_form(name, scalar)
    else:
        try:
            expr, arity = S.make_form(scalar, None, (), f"scalar form of op {name!r}")
        except S.ScalarFormError as e:
            raise ValueError(str(e)) from None
    spec = register(name, _broadcast_shape(name), _numpy_rule(expr, numpy), _vjp_rule(vjp) if vjp else None,
                    elementwise=True, scalar_cpu=expr, scalar_cuda=scalar_cuda, arity=arity, arithmetic=arithmetic,
                    differentiable=differentiable)
    return _builder(spec, doc)


def _text_form(name: str, text: str):
    """A text form's operands are the names ``x, y, z`` it uses, in that order (``x`` alone: one operand)."""
    try:
        expr = S.parse(text, ("x", "y", "z"), f"scalar form of op {name!r}")
    except S.ScalarFormError as e:
        raise ValueError(str(e)) from None
    used = S.operands(expr)
    arity = max(used) + 1 if used else 0
    if used != set(range(arity)):
        raise ValueError(f"scalar form of op {name!r}: {text!r} uses {', '.join('xyz'[k] for k in sorted(used))}; "
                         "operands are x, y, z in order")
    return expr, arity


def _broadcast_shape(op: str):
    def rule(inputs, attrs):
        import numpy as np

        try:
            shape = np.broadcast_shapes(*(n.shape for n in inputs))
        except ValueError:
            raise shape_error(op, inputs, "feature shapes do not broadcast") from None
        return shape, float_dtype(inputs)
    return rule


def _numpy_rule(expr: S.Expr, fn: Callable | None):
    if fn is None:
        return lambda node, *arrays: S.evaluate(expr, pad_features(list(arrays), node.lead))
    return lambda node, *arrays: fn(*pad_features(list(arrays), node.lead))


def _vjp_rule(fn: Callable):
    def rule(node, g):
        out = fn(g, node, *node.inputs)
        if not isinstance(out, (tuple, list)):
            out = (out,)
        if len(out) != len(node.inputs):
            raise ValueError(f"the VJP of op {node.op!r} gave {len(out)} adjoint(s) for {len(node.inputs)} operand(s)")
        return tuple(None if c is None else sum_to(as_node(c), x) for c, x in zip(out, node.inputs))
    return rule


def _builder(spec: OpDef, doc: str | None):
    def apply(*operands):
        return make(spec.name, operands)
    apply.__name__ = apply.__qualname__ = spec.name
    apply.__doc__ = doc or f"The elementwise op {spec.name!r} (registered with rnnc.register_op)."
    apply.op = spec
    return apply


def unregister_op(name: str) -> None:
    """Remove an op added with :func:`register_op` (tests; a model already built with it keeps its nodes)."""
    spec = OPS.get(name)
    if spec is None:
        raise KeyError(f"no op {name!r} is registered")
    del OPS[name]
