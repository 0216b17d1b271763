"""``rc.interpret``: the interpreter a graph needs (the rolled one, or the checkpointing one for a gradient graph
built with ``checkpoint=k``), built once per graph and run."""
from __future__ import annotations

import weakref

from rnnc.interpret.checkpoint import CheckpointInterpreter
from rnnc.interpret.rolled import Interpreter, Result
from rnnc.ir.graph import Graph


def interpret(model, inputs: dict, params: dict, dtype=None, sizes=None, batch=None,
              check_finite: bool = False) -> Result:
    """Run a model (or gradient model) in numpy: ``rc.interpret(m, {"x": X, "y": Y}, params)``.

    Parameters
    ----------
    model : Model or Graph
    inputs : dict name -> array, laid out ``(*axis sizes, B, *shape)``; lengths as ``<input>_lengths``.
    params : dict name -> array.
    dtype : "float32" or "float64"; default: float64 if the params are, else float32.
    sizes : dict axis name -> size, for axes no input varies along (e.g. an autonomous system).
    batch : batch size when no input is batched (default 1).
    check_finite : refuse NaN / Inf in any float input or param (``InputError`` naming it and where);
        ``"params"``: in the params only.

    Sizes must be positive integers; integer inputs that index (class labels, ``one_hot`` indices, lengths)
    must be in range: see :mod:`rnnc.interpret.boundary`. ``rc.compile``'d models check the same.
    """
    graph = model if isinstance(model, Graph) else model.graph
    return interpreter_for(graph).run(inputs, params, dtype, sizes, batch, check_finite)


_INTERPRETERS: weakref.WeakKeyDictionary[Graph, Interpreter] = weakref.WeakKeyDictionary()


def interpreter_for(graph: Graph) -> Interpreter:
    """The (cached) interpreter of ``graph``: its schedule is built once per graph, not once per call."""
    interp = _INTERPRETERS.get(graph)
    if interp is None:
        if graph.meta.get("checkpoint"):
            interp = CheckpointInterpreter(graph, graph.meta["checkpoint"])
        else:
            interp = Interpreter(graph)
        _INTERPRETERS[graph] = interp
    return interp
