#!/usr/bin/env bash
# The test suite: install what the tests need, then run pytest. Tests under tests/cuda_sim/ (if any) run in
# their own process with Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which must be set before numba
# is imported.   Usage: bash scripts/test.sh [PYTEST ARGS...]
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ensure_system
ensure_rnnc "test,cuda"     # numba-cuda: the CUDA target and its simulator (tests/cuda_sim)

"$PYTHON" -m pytest --ignore=tests/cuda_sim "$@"
if compgen -G "tests/cuda_sim/test_*.py" >/dev/null; then
    echo "== CUDA simulator tests (NUMBA_ENABLE_CUDASIM=1)"
    NUMBA_ENABLE_CUDASIM=1 "$PYTHON" -m pytest tests/cuda_sim
fi
