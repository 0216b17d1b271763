"""The numpy reference: the rolled interpreter (stage by stage) and the unrolled one (node by node)."""
from rnnc.interpret.rolled import Interpreter, Result
from rnnc.interpret.run import interpret
from rnnc.interpret.unrolled import interpret_unrolled

__all__ = ["Interpreter", "Result", "interpret", "interpret_unrolled"]
