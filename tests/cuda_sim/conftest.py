"""CUDA backend tests run in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba is imported;
``scripts/test.sh`` does this in a separate process) or on a real GPU (``scripts/gpu.sh``). Anywhere else
they are skipped with a message saying how to run them."""
import os

import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _gpu() -> bool:
    try:
        from numba import cuda

        return cuda.is_available()
    except Exception:          # no driver, no numba-cuda: nothing to run on
        return False


def pytest_collection_modifyitems(config, items):
    if SIM or _gpu():
        return
    skip = pytest.mark.skip(reason="needs NUMBA_ENABLE_CUDASIM=1 (bash scripts/test.sh) or a GPU (scripts/gpu.sh)")
    for item in items:
        if "cuda_sim" in str(item.fspath):
            item.add_marker(skip)
