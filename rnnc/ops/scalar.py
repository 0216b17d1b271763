"""Scalar forms: the per-element meaning of an elementwise op, in a small safe expression language.

A scalar form is a Python function of one scalar per operand, written with ordinary arithmetic and the
helpers of this module; rnnc calls it once on symbolic operands and records the expression it builds
(an :class:`Expr` tree)::

    def softplus(x):
        return maximum(x, 0.0) + log1p(exp(-abs(x)))

The language: operands, numbers, ``+ - * / **``, unary ``-``, ``abs``, the functions of :data:`FUNCTIONS`,
:func:`maximum`, :func:`minimum`, and :func:`where` with a comparison (``x > 0``) or a value (nonzero) as its
condition. A form may also be given as text (``"maximum(x, 0.0) + log1p(exp(-abs(x)))"``), which is parsed with
:mod:`ast` into the same tree; any other construct is refused with a message naming it.

Backends never paste a user's text: they render the tree (:func:`render`), so a generated line holds only
rnnc's own operand expressions, operators, ``F(<float>)`` constants and whitelisted ``math`` calls. The same
tree evaluates with numpy (:func:`evaluate`), which the op table test uses to check a form against the op's
reference.
"""
from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: one-argument functions of the language -> their numpy forms; each renders as ``math.<name>(...)``, except
#: ``sigmoid`` (an expression of ``exp``) and, with vectorisable math on the CPU, ``tanh`` and ``sigmoid``
FUNCTIONS: dict[str, Callable] = {
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh, "sqrt": np.sqrt,
    "sin": np.sin, "cos": np.cos, "atan": np.arctan, "floor": np.floor, "ceil": np.ceil,
    "sigmoid": lambda x: 0.5 + 0.5 * np.tanh(0.5 * x),
}
_BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power}
_COMPARE = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal, "!=": np.not_equal}
#: text spellings of the operators (for refusals and the docs)
LANGUAGE = ("operands, numbers, + - * / **, unary -, abs(), maximum(a, b), minimum(a, b), "
            "where(cond, a, b) with cond a comparison (> >= < <= !=) or a value (nonzero), and "
            + ", ".join(f"{f}()" for f in FUNCTIONS))
MAX_NODES = 500      # a form larger than this is refused (one generated expression per element)


class ScalarFormError(ValueError):
    """A scalar form outside the language of :mod:`rnnc.ops.scalar`."""


@dataclass(frozen=True, eq=False)
class Expr:
    """One node of a scalar form: ``kind`` is "arg" (operand ``value``), "num" (the float ``value``), "neg",
    "abs", "bin"/"cmp" (operator ``value``), "call" (function ``value``), "max", "min" or "where"."""

    kind: str
    value: object = None
    args: tuple = ()

    # --- tracing: arithmetic on an Expr builds a bigger Expr
    def __add__(self, o):
        return _bin("+", self, o)

    def __radd__(self, o):
        return _bin("+", o, self)

    def __sub__(self, o):
        return _bin("-", self, o)

    def __rsub__(self, o):
        return _bin("-", o, self)

    def __mul__(self, o):
        return _bin("*", self, o)

    def __rmul__(self, o):
        return _bin("*", o, self)

    def __truediv__(self, o):
        return _bin("/", self, o)

    def __rtruediv__(self, o):
        return _bin("/", o, self)

    def __pow__(self, o):
        return _bin("**", self, o)

    def __rpow__(self, o):
        return _bin("**", o, self)

    def __neg__(self):
        return Expr("neg", None, (lift(self),))

    def __pos__(self):
        return self

    def __abs__(self):
        return Expr("abs", None, (lift(self),))

    def __gt__(self, o):
        return _cmp(">", self, o)

    def __ge__(self, o):
        return _cmp(">=", self, o)

    def __lt__(self, o):
        return _cmp("<", self, o)

    def __le__(self, o):
        return _cmp("<=", self, o)

    def __bool__(self):
        raise ScalarFormError("a scalar form cannot branch on an operand's value (if, and, or, min(), max()); "
                              "use where(cond, a, b), maximum() or minimum() from rnnc.ops.scalar")


def lift(x) -> Expr:
    """An :class:`Expr` from an Expr or a Python number; a comparison only as a condition of :func:`where`."""
    if isinstance(x, Expr):
        if x.kind == "cmp":
            raise ScalarFormError("a comparison is only allowed as the condition of where(cond, a, b)")
        return x
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ScalarFormError(f"a scalar form can use operands and numbers, not {type(x).__name__} {x!r}")
    if not math.isfinite(float(x)):
        raise ScalarFormError(f"a scalar form's constants must be finite, not {x!r}")
    return Expr("num", float(x))


def _bin(op, a, b) -> Expr:
    return Expr("bin", op, (lift(a), lift(b)))


def _cmp(op, a, b) -> Expr:
    return Expr("cmp", op, (lift(a), lift(b)))


def _call(name):
    def fn(x):
        return Expr("call", name, (lift(x),))
    fn.__name__ = name
    fn.__doc__ = f"``{name}(x)`` in a scalar form (numpy: {name})."
    return fn


exp, log, log1p, expm1, tanh, sqrt = (_call(n) for n in ("exp", "log", "log1p", "expm1", "tanh", "sqrt"))
sin, cos, atan, floor, ceil, sigmoid = (_call(n) for n in ("sin", "cos", "atan", "floor", "ceil", "sigmoid"))


def maximum(a, b) -> Expr:
    """The larger of ``a`` and ``b``."""
    return Expr("max", None, (lift(a), lift(b)))


def minimum(a, b) -> Expr:
    """The smaller of ``a`` and ``b``."""
    return Expr("min", None, (lift(a), lift(b)))


def where(cond, a, b) -> Expr:
    """``a`` where ``cond`` holds (a comparison, or a value that is nonzero), else ``b``."""
    if not (isinstance(cond, Expr) and cond.kind == "cmp"):
        cond = Expr("cmp", "!=", (lift(cond), Expr("num", 0.0)))
    return Expr("where", None, (cond, lift(a), lift(b)))


_HELPERS = {"abs": abs, "maximum": maximum, "minimum": minimum, "where": where,
            **{n: globals()[n] for n in FUNCTIONS}}


# ----------------------------------------------------------------------------- making a form


def arity_of(fn: Callable, what: str) -> int:
    """Number of operands of a scalar form function (its positional parameters, none optional)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.default is not p.empty for p in params):
        raise ScalarFormError(f"{what}: a scalar form takes one plain parameter per operand (no defaults, "
                              f"*args or keywords)")
    return len(params)


def trace(fn: Callable, arity: int, what: str) -> Expr:
    """Call ``fn`` on ``arity`` symbolic operands; the expression it returns."""
    try:
        out = lift(fn(*(Expr("arg", k) for k in range(arity))))
    except ScalarFormError as e:
        raise ScalarFormError(f"{what}: {e}") from None
    except (TypeError, AttributeError) as e:
        raise ScalarFormError(f"{what}: {e} (the language: {LANGUAGE}, from rnnc.ops.scalar)") from None
    _check_size(out, what)
    return out


def parse(text: str, names: tuple, what: str) -> Expr:
    """Parse ``text``, an expression of the operands ``names``, into an :class:`Expr` (see the module doc)."""
    if not isinstance(text, str) or len(text) > 4000:
        raise ScalarFormError(f"{what}: a scalar form's text is a str of at most 4000 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ScalarFormError(f"{what}: {text!r} is not an expression ({e.msg})") from None
    env = {name: Expr("arg", k) for k, name in enumerate(names)}
    try:
        out = lift(_eval(tree.body, env))
    except ScalarFormError as e:
        raise ScalarFormError(f"{what}: {e} in {text!r}") from None
    _check_size(out, what)
    return out


def _eval(node: ast.AST, env: dict):
    """Evaluate an allowed ast node into an Expr (the parse tree is as deep as the text, which is bounded)."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_BIN:
        return _bin(_AST_BIN[type(node.op)], _eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        x = lift(_eval(node.operand, env))
        return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _AST_CMP:
        return _cmp(_AST_CMP[type(node.ops[0])], _eval(node.left, env), _eval(node.comparators[0], env))
    if isinstance(node, ast.IfExp):
        return where(_eval(node.test, env), _eval(node.body, env), _eval(node.orelse, env))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _HELPERS \
            and not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args):
        try:
            return _HELPERS[node.func.id](*(_eval(a, env) for a in node.args))
        except TypeError:
            raise ScalarFormError(f"{node.func.id}() given {len(node.args)} arguments") from None
    shown = ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__
    raise ScalarFormError(f"{shown!r} is not allowed (the language: {LANGUAGE}; operands "
                          f"{', '.join(env) or 'none'})")


_AST_BIN = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_AST_CMP = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.NotEq: "!="}


def _walk(expr: Expr):
    """Every node of ``expr``, parents before children (iterative: forms may nest deeply)."""
    stack = [expr]
    while stack:
        e = stack.pop()
        yield e
        stack.extend(reversed(e.args))


def _check_size(expr: Expr, what: str) -> None:
    if sum(1 for _ in _walk(expr)) > MAX_NODES:
        raise ScalarFormError(f"{what}: a scalar form has at most {MAX_NODES} operations")


def operands(expr: Expr) -> set:
    """Indices of the operands ``expr`` reads."""
    return {e.value for e in _walk(expr) if e.kind == "arg"}


# ----------------------------------------------------------------------------- rendering and evaluating


def render(expr: Expr, args: list[str], vector_math: bool = False) -> str:
    """Python source of ``expr`` with operand k replaced by the expression ``args[k]`` (rnnc's own code).

    Numbers render as ``F(<float repr>)`` (the kernel's float type), functions as ``math.<name>``; with
    ``vector_math``, ``tanh``/``sigmoid`` call the CPU module's vectorisable helpers ``tanh_``/``sigmoid_``.
    """
    return _Renderer(args, vector_math).run(expr)


class _Renderer:
    def __init__(self, args, vector_math):
        self.args, self.vector = args, vector_math

    def run(self, expr: Expr) -> str:
        """Post-order over the tree without recursion: each node's text from its children's."""
        done: dict = {}
        stack = [(expr, False)]
        while stack:
            e, ready = stack.pop()
            if ready:
                done[id(e)] = self.one(e, [done[id(a)] for a in e.args])
            elif id(e) not in done:
                stack.append((e, True))
                stack.extend((a, False) for a in e.args)
        return done[id(expr)]

    def one(self, e: Expr, s: list) -> str:
        if e.kind == "arg":
            return self.args[e.value]
        if e.kind == "num":
            return f"F({e.value!r})"
        if e.kind == "neg":
            return f"(-{s[0]})"
        if e.kind == "abs":
            return f"abs({s[0]})"
        if e.kind in ("bin", "cmp"):
            return f"({s[0]} {e.value} {s[1]})" if e.kind == "bin" else f"{s[0]} {e.value} {s[1]}"
        if e.kind in ("max", "min"):
            return f"{e.kind}({s[0]}, {s[1]})"
        if e.kind == "where":
            return f"({s[1]} if {s[0]} else {s[2]})"
        if self.vector and e.value in ("tanh", "sigmoid"):
            return f"{e.value}_({s[0]})"
        if e.value == "sigmoid":
            return f"(F(1.0) / (F(1.0) + math.exp(-{s[0]})))"
        return f"math.{e.value}({s[0]})"


def evaluate(expr: Expr, arrays: list) -> np.ndarray:
    """``expr`` on numpy arrays (broadcasting), iteratively."""
    done: dict = {}
    stack = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if not ready:
            if id(e) not in done:
                stack.append((e, True))
                stack.extend((a, False) for a in e.args)
            continue
        v = [done[id(a)] for a in e.args]
        done[id(e)] = _np_one(e, v, arrays)
    return np.asarray(done[id(expr)], dtype=np.float64)


def _np_one(e: Expr, v: list, arrays: list):
    if e.kind == "arg":
        return arrays[e.value]
    if e.kind == "num":
        return e.value
    if e.kind == "neg":
        return np.negative(v[0])
    if e.kind == "abs":
        return np.abs(v[0])
    if e.kind == "bin":
        return _BINARY[e.value](v[0], v[1])
    if e.kind == "cmp":
        return _COMPARE[e.value](v[0], v[1])
    if e.kind in ("max", "min"):
        return (np.maximum if e.kind == "max" else np.minimum)(v[0], v[1])
    if e.kind == "where":
        return np.where(v[0], v[1], v[2])
    return FUNCTIONS[e.value](v[0])


def make_form(form, arity: int | None, names: tuple, what: str) -> tuple[Expr, int]:
    """An :class:`Expr` and its operand count from a form given as a function, text or Expr."""
    if isinstance(form, Expr):
        if arity is None:
            raise ScalarFormError(f"{what}: an Expr form needs the op's arity")
        return lift(form), arity
    if isinstance(form, str):
        return parse(form, names, what), len(names)
    if callable(form):
        n = arity_of(form, what)
        if arity is not None and n != arity:
            raise ScalarFormError(f"{what}: the scalar form takes {n} operands, the op {arity}")
        return trace(form, n, what), n
    raise ScalarFormError(f"{what}: a scalar form is a function of scalar operands or an expression's text, "
                          f"not {type(form).__name__}")
