"""``rnnc.train``: optimizers, schedules, the trainer, checkpoints and safe model files."""
from rnnc.train.augment import FlipShift
from rnnc.train.checkpoint import CheckpointError, load_model, save_model
from rnnc.train.engine import CompiledEngine, InterpretEngine, make_engine
from rnnc.train.optim import Adam, CosineLR, GradientDescentMomentum, StepLR, clip_global_norm
from rnnc.train.trainer import Trainer

__all__ = ["FlipShift", "CheckpointError", "load_model", "save_model", "CompiledEngine", "InterpretEngine",
           "make_engine", "Adam", "CosineLR", "GradientDescentMomentum", "StepLR", "clip_global_norm", "Trainer"]
