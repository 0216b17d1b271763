"""Autodiff: gradients derived as rnnc graphs (reverse scans), truncation and checkpointing."""
from rnnc.autodiff.api import GradModel, grad

__all__ = ["GradModel", "grad"]
