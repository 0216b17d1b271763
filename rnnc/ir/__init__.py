"""The intermediate representation: frozen nodes over named loop axes, and lowered graphs."""
from rnnc.ir.node import Axis, AxisShift, Node, user_line
from rnnc.ir.graph import Graph

__all__ = ["Axis", "AxisShift", "Node", "Graph", "user_line"]
