"""The intermediate representation: frozen nodes over named loop axes, and lowered graphs."""
from rnnc.ir.graph import Graph
from rnnc.ir.node import Axis, AxisShift, Node, user_line

__all__ = ["Axis", "AxisShift", "Node", "Graph", "user_line"]
