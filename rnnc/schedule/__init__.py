"""Validation and scheduling: dependency SCCs -> map and scan stages; unrolling in time."""
from rnnc.schedule.schedule import Schedule, Stage, schedule
from rnnc.schedule.unroll import unroll

__all__ = ["Schedule", "Stage", "schedule", "unroll"]
