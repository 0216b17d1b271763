"""Shared test set-up: hypothesis profiles ("ci" by default, "dev" for more examples) and the zoo on sys.path.

Select a profile with ``HYPOTHESIS_PROFILE=dev pytest`` or ``pytest --hypothesis-profile=dev``.
"""
import os
import signal
import sys

from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The interrupt tests send SIGINT to their own process. A shell starts background jobs with SIGINT ignored, and
# the Trainer (rightly) installs no handler over an ignored signal: restore Python's default handler, so those
# tests test the Trainer whatever way the suite was started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Parallel test workers already use every core: a new module's functions compile in the worker's own process
# (rnnc/runtime/precompile.py; its tests set RNNC_COMPILE_WORKERS themselves), so no worker starts more processes.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("RNNC_COMPILE_WORKERS", "1")

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
