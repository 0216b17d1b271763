"""Generation: a model whose output is a distribution over ``V`` classes, sampled and fed back as its next input.

The user names the pair: ``rc.compile(m, feedback={"x": "logits"})`` feeds a token drawn from output
``logits`` back as input ``x``. The input is either the token's index (an int input of shape ``()``) or its
one-hot row (a float input of shape ``(V,)``); the output holds logits (unnormalised log-probabilities), or
probabilities when it is a ``softmax``. Given a prime ``c_1 .. c_P`` (``P >= 1``; ``B`` of them side by side),
generation means this loop, where ``advance`` is one step of the model (carrying its state):

.. code-block:: python

    for k in range(P):
        z = advance(prime[k])                      # the model reads the prime
    for k in range(steps):
        c = sample(z, temperature, top_k, rng)     # (B,) token ids
        out.append(c)
        z = advance(c)                             # (not after the last draw)

``sample`` draws from :math:`p_i \\propto \\exp(z_i / \\tau)` restricted to the ``top_k`` largest
:math:`z_i`; :math:`\\tau = 0` is greedy (``argmax``). The draws come from ``numpy.random.default_rng(seed)``,
one uniform number per sequence and step, so a seed fixes the text.

:meth:`rnnc.runtime.compiled.Compiled.generate` advances with the compiled ``step`` kernel (one call per
step); :func:`generate` is the reference, which runs :func:`rnnc.interpret` over the whole sequence so far at
every step (no state at all: the meaning of the loop above, at quadratic cost).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnc.errors import GraphError, InputError
from rnnc.interpret.boundary import positive_int
from rnnc.ir.graph import Graph


@dataclass(frozen=True)
class Feedback:
    """Which output is sampled (``output``, ``classes`` wide) and fed back as which ``input``.

    ``one_hot``: the input is a float ``(V,)`` row (else an int index); ``probs``: the output holds
    probabilities (a ``softmax``; else logits)."""

    input: str
    output: str
    classes: int
    one_hot: bool
    probs: bool

    def encode(self, tokens: np.ndarray, dtype) -> np.ndarray:
        """The input array for ``tokens`` (any shape): the ids, or their one-hot rows."""
        if not self.one_hot:
            return np.asarray(tokens, dtype=np.int64)
        return np.eye(self.classes, dtype=dtype)[tokens]


def feedback_of(graph: Graph, mapping) -> Feedback:
    """``mapping`` (``{input name: output name}``, one pair) checked against ``graph``."""
    if isinstance(mapping, Feedback):
        return mapping
    if not isinstance(mapping, dict) or len(mapping) != 1:
        raise GraphError(f"feedback= must be one pair {{input name: output name}}, e.g. {{'x': 'logits'}}; "
                         f"got {mapping!r}")
    (inp, out), = mapping.items()
    if inp not in graph.inputs:
        raise GraphError(f"feedback: model {graph.name!r} has no input {inp!r}; its inputs are {sorted(graph.inputs)}")
    if out not in graph.outputs:
        raise GraphError(f"feedback: model {graph.name!r} has no output {out!r}; its outputs are "
                         f"{sorted(graph.outputs)}")
    o, i = graph.outputs[out], graph.inputs[inp]
    if len(o.shape) != 1 or not o.axes:
        raise GraphError(f"feedback: output {out!r} must be a distribution over classes at each step, shape (V,) "
                         f"along an axis; it has shape {o.shape} and axes {[a.name for a in o.axes]}")
    classes = o.shape[0]
    if len(i.axes) != 1:
        raise GraphError(f"feedback: input {inp!r} must be a sequence along one axis; it has axes "
                         f"{[a.name for a in i.axes]}")
    if i.dtype == "int" and i.shape == ():
        one_hot = False
    elif i.dtype == "float" and i.shape == (classes,):
        one_hot = True
    else:
        raise GraphError(f"feedback: input {inp!r} must hold a token as an int of shape () or a one-hot float "
                         f"row of shape ({classes},) (output {out!r} has {classes} classes); it is "
                         f"{i.dtype} of shape {i.shape}")
    return Feedback(inp, out, classes, one_hot, o.op == "softmax")


def sample(scores, temperature: float = 1.0, top_k: int | None = None, rng=None, probs: bool = False) -> np.ndarray:
    """One token per row of ``scores`` ``(B, V)``: drawn from :math:`p \\propto \\exp(z / \\tau)` over the
    ``top_k`` largest scores (ties with the k-th are kept), or the ``argmax`` when ``temperature`` is 0.

    ``scores`` are logits :math:`z`, or probabilities when ``probs`` (then :math:`z = \\log p`). ``rng`` is a
    ``numpy.random.Generator``; each row takes one ``rng.random()`` and inverts the cumulative distribution.
    """
    z = np.asarray(scores, dtype=np.float64)
    if probs:
        with np.errstate(divide="ignore"):
            z = np.log(z)
    if temperature == 0:
        return np.argmax(z, axis=1).astype(np.int64)
    z = z / temperature
    classes = z.shape[1]
    if top_k is not None and top_k < classes:
        kth = np.partition(z, classes - top_k, axis=1)[:, classes - top_k:classes - top_k + 1]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    u = rng.random(z.shape[0]) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), classes - 1).astype(np.int64)


def check_options(fb: Feedback, prime, steps, temperature, top_k, seed):
    """``prime`` as ``(P, B)`` int64 ids and whether it was one sequence ``(P,)``; the other options checked;
    the random generator."""
    arr = np.asarray(prime)
    if arr.ndim not in (1, 2) or arr.shape[0] == 0 or (arr.ndim == 2 and arr.shape[1] == 0):
        raise InputError(f"generate(): prime must be token ids of shape (P,) or (P, B) with P >= 1 (time first), "
                         f"got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise InputError(f"generate(): prime must hold integer token ids, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= fb.classes:
        bad = arr[(arr < 0) | (arr >= fb.classes)].reshape(-1)[0]
        raise InputError(f"generate(): prime holds token {int(bad)}; valid ids are 0..{fb.classes - 1}")
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InputError(f"generate(): steps must be an integer >= 0, got {steps!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)) \
            or not np.isfinite(temperature) or temperature < 0:
        raise InputError(f"generate(): temperature must be a finite number >= 0 (0: greedy), got {temperature!r}")
    if top_k is not None:
        top_k = positive_int(top_k, "generate(): top_k")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return arr.astype(np.int64).reshape(arr.shape[0], -1), arr.ndim == 1, int(steps), float(temperature), top_k, rng


def run(advance, prime, steps: int, fb: Feedback, temperature: float = 1.0, top_k: int | None = None,
        seed=None) -> np.ndarray:
    """The generation loop of the module docstring; ``advance.start(B)`` then ``advance(tokens) -> (B, V)``.
    Returns the prime followed by the drawn tokens, ``(P + steps,)`` or ``(P + steps, B)`` like ``prime``."""
    ids, single, steps, temperature, top_k, rng = check_options(fb, prime, steps, temperature, top_k, seed)
    advance.start(ids.shape[1])
    for tokens in ids:
        scores = advance(tokens)
    drawn = []
    for k in range(steps):
        tokens = sample(scores, temperature, top_k, rng, fb.probs)
        drawn.append(tokens)
        if k + 1 < steps:
            scores = advance(tokens)
    out = np.concatenate([ids, np.array(drawn, dtype=np.int64).reshape(steps, ids.shape[1])], axis=0)
    return out[:, 0] if single else out


class StepRunner:
    """``advance`` through a compiled model's ``step`` kernel, carrying its state."""

    def __init__(self, compiled, params: dict, fb: Feedback, inputs: dict | None = None):
        self.f, self.params, self.fb, self.inputs = compiled, params, fb, dict(inputs or {})
        self.state = None

    def start(self, batch: int) -> None:
        self.state = self.f.initial_state(batch, self.params, self.inputs)

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        x = self.fb.encode(tokens, self.f.dtype)
        out, self.state = self.f.step({**self.inputs, self.fb.input: x}, self.state, self.params)
        return out[self.fb.output]


class InterpretRunner:
    """``advance`` by :func:`rnnc.interpret` over every token so far (the reference: no state)."""

    def __init__(self, model, params: dict, fb: Feedback, inputs: dict | None = None, dtype=None):
        self.model, self.params, self.fb, self.inputs, self.dtype = model, params, fb, dict(inputs or {}), dtype
        self.tokens: list = []

    def start(self, batch: int) -> None:
        self.tokens = []

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        from rnnc.interpret import interpret

        self.tokens.append(np.asarray(tokens, dtype=np.int64))
        x = self.fb.encode(np.stack(self.tokens), self.dtype or "float64")
        res = interpret(self.model, {**self.inputs, self.fb.input: x}, self.params, dtype=self.dtype)
        return res.outputs[self.fb.output][-1]


def generate(model, params: dict, prime, steps: int, feedback, temperature: float = 1.0, top_k: int | None = None,
             seed=None, inputs: dict | None = None, dtype=None) -> np.ndarray:
    """The reference generation, by the interpreter: ``prime`` ``(P,)`` or ``(P, B)`` token ids, then ``steps``
    tokens drawn from output ``feedback[input]`` and fed back as ``input`` (see the module docstring).

    ``inputs`` holds the model's axis-free inputs (e.g. initial states). Equals
    ``rc.compile(model, dtype=..., feedback=feedback).generate(params, prime, steps, ...)`` up to rounding
    (exactly, for greedy decoding in float64 away from ties).
    """
    graph = model if isinstance(model, Graph) else model.graph
    fb = feedback_of(graph, feedback)
    return run(InterpretRunner(model, params, fb, inputs, dtype), prime, steps, fb, temperature, top_k, seed)


__all__ = ["Feedback", "feedback_of", "generate", "run", "sample", "StepRunner", "InterpretRunner"]
