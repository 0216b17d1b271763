#!/usr/bin/env bash
# The test suite: install what the tests need, then run pytest. Tests under tests/cuda_sim/ (if any) run in
# their own process with Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which must be set before numba
# is imported. Both run in RNNC_TEST_WORKERS worker processes (pytest-xdist; default 2, 0 = one process).
# Usage: bash scripts/test.sh [PYTEST ARGS...]
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ensure_system
ensure_rnnc "test,cuda"     # numba-cuda: the CUDA target and its simulator (tests/cuda_sim)

# worksteal: a worker that runs out of tests takes half of the other's queue (compiles make tests uneven)
workers=(-n "${RNNC_TEST_WORKERS:-2}" --dist worksteal)
"$PYTHON" -m pytest "${workers[@]}" --ignore=tests/cuda_sim "$@"
if compgen -G "tests/cuda_sim/test_*.py" >/dev/null; then
    echo "== CUDA simulator tests (NUMBA_ENABLE_CUDASIM=1)"
    NUMBA_ENABLE_CUDASIM=1 "$PYTHON" -m pytest "${workers[@]}" tests/cuda_sim
fi
