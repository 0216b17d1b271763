"""The names users give rnnc (model, axes, inputs, params, signals, outputs): one rule they follow, and the one
way they reach generated code.

A name is a Python identifier that is not a keyword and does not start with ``__``. Generated code's identifiers
are rnnc's own (``v3``, ``i0``, ``stage_2``...), with one exception made here: a value whose name is plain
ASCII (:func:`code_name`) is spelled ``<rnnc's own prefix and number>_<name>`` (``v12_h``, ``p5_U``), which
is unique and can equal none of rnnc's other identifiers. Any name, and the user's source lines, appear in
comments and the module docstring only as written by :func:`safe_comment`. The rule is checked where a name
is declared (:class:`rnnc.ir.node.Axis`, :class:`rnnc.dsl.model.Model`) and again, by
:func:`check_graph_names`, when a graph is keyed for the cache or rendered to source, so a name changed or
forged after declaration cannot get through either.
"""
from __future__ import annotations

import keyword
import re

from rnnc.ir.where import user_line

#: characters Python's tokenizer or ``str.splitlines`` take as the end of a line
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
#: names spelled into identifiers: plain ASCII, at most :data:`CODE_NAME_MAX` characters, no leading ``__``
_CODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
CODE_NAME_MAX = 24
#: a node's label for a shifted reference: ``h[t-1]`` (``value[axis+offset]``)
_REF_LABEL = re.compile(r"(?P<value>[^\[\]]+)\[(?P<axis>[^\[\]+-]+)[+-]\d+\]")


def _plain(text: str) -> str:
    """``text`` as an exact ``str`` (a subclass's overridden methods play no part in checking or writing it)."""
    return str.__str__(text)


def is_name(name) -> bool:
    """Does ``name`` follow the rule: a ``str`` that is an identifier, not a keyword, no leading ``__``?"""
    if not isinstance(name, str):
        return False
    name = _plain(name)
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("__")


def check_name(name, what: str) -> str:
    """Return ``name`` (as an exact ``str``) if it follows the rule (:func:`is_name`); else raise a one-line
    ``ValueError`` naming ``what`` (``"axis"``, ``"model"``...), the name's ``repr()`` and the user's ``file:line``."""
    if not is_name(name):
        shown = str.__repr__(_plain(name)) if isinstance(name, str) else f"of type {type(name).__name__}"
        raise ValueError(f"{what} name {shown} is not a valid Python identifier (letters, digits, _; "
                         f"no leading digit, no keyword, no leading '__') at {user_line()}")
    return _plain(name)


def check_label(label, what: str) -> str:
    """A node's label: a name, or a shifted reference's ``value[axis±k]`` made of two names."""
    ref = _REF_LABEL.fullmatch(label) if isinstance(label, str) else None
    if ref is not None and is_name(ref["value"]) and is_name(ref["axis"]):
        return label
    return check_name(label, what)


def code_name(name) -> str | None:
    """``name`` if generated code may spell it into an identifier (after rnnc's own prefix: ``v12_h``): it
    follows the rule of names (:func:`is_name`), is plain ASCII ``[A-Za-z][A-Za-z0-9_]*`` and at most
    :data:`CODE_NAME_MAX` characters long; else None (the value keeps its bare ``v12``)."""
    if not is_name(name):
        return None
    name = _plain(name)
    return name if len(name) <= CODE_NAME_MAX and _CODE_NAME.fullmatch(name) else None


def prefixed(var: str, name) -> str:
    """rnnc's own identifier ``var`` (``v12``) followed by ``_`` and ``name`` when :func:`code_name` allows it."""
    safe = code_name(name) if name is not None else None
    return f"{var}_{safe}" if safe else var


def safe_comment(name, bare: bool = False, text: bool = False, limit: int | None = None) -> str:
    """``name`` as it may appear in a comment or a docstring of generated code: its ``repr()`` (``'h'``), or
    with ``bare`` a plain identifier as it is (``h``). With ``text`` (a line of the user's source, a file name:
    comments only), printable ASCII is kept as it is (it holds no line break) and anything else is escaped; with
    ``limit``, text longer than that is cut and ends with ``...``.

    Whatever ``name`` holds, the text is one line with no quote that can end a string, and still a Python literal
    equal to ``name``: ``repr()`` escapes every non-printable character (line breaks such as ``\\n``, ``\\x0b``,
    ``\\x85``, ``\\u2028`` among them) and ``'``, ``"`` is written ``\\x22``, and any other character that Python
    or ``str.splitlines`` take as a line break is escaped too. Renderers call this only for names that
    :func:`check_graph_names` has accepted (and, with ``text``, for source lines, which may hold anything); the
    escaping is the second line of defence. Text kept with ``text`` may hold quotes: never in a string literal.
    """
    name = _plain(name if isinstance(name, str) else str(name))
    if limit is not None and len(name) > limit:
        name = name[:max(limit - 3, 0)] + "..."
    if bare and name.isidentifier() or text and all(" " <= c <= "~" for c in name):
        return name
    out = str.__repr__(name + '"')[:-2] + "'"         # always '...': a '"' in it makes repr() pick single quotes
    out = out.replace('"', "\\x22")
    return "".join(f"\\u{ord(c):04x}" if c in LINE_BREAKS or not c.isprintable() else c for c in out)


def fresh_name(name: str, taken: set) -> str:
    """``name``, or ``name_1``, ``name_2``... the first not in ``taken``; added to ``taken`` (the graph
    transforms' names for the signals they add: ``d_h``, ``ckpt_h``)."""
    base, k = name, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def check_graph_names(graph) -> None:
    """Check every name of ``graph`` that generated code or a cache key could carry: the model's, every loop
    axis', every named leaf, value, output, gradient and initial value, and each node's label. Raises a one-line
    ``ValueError`` naming the first one that breaks the rule (see :func:`check_name`)."""
    check_name(graph.name, "model")
    for axis in graph.axes():
        check_name(axis.name, "axis")
    for what, table in (("input", graph.inputs), ("param", graph.params), ("value", graph.values),
                        ("output", graph.outputs), ("gradient", graph.grads), ("initial value", graph.inits)):
        for name in table:
            check_name(name, what)
    for name in graph.signals:
        check_name(name, "signal")
    for node in graph.nodes:
        if node.name is not None:
            check_label(node.name, f"{node.op} node")
        if node.op == "ref":
            check_name(node.attr("value"), "reference")


__all__ = ["LINE_BREAKS", "CODE_NAME_MAX", "is_name", "check_name", "check_label", "code_name", "prefixed",
           "safe_comment", "check_graph_names"]
