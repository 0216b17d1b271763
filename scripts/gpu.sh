#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: run the CUDA backend's tests on the real device (not the simulator), then
# the CUDA benchmark (rnnc vs PyTorch cuDNN vs a PyTorch Python cell). One command:
#     bash scripts/gpu.sh [--reps N] [--cells rnn,lstm,gru]
# The table is printed and written to benchmarks/results/cuda-<date>.md (and to $OUT/ when that is set);
# copy it into docs/benchmarks.md with the GPU name and this command.
# Installs nothing when rnnc, numba-cuda and torch already import (GPU machines are often offline); otherwise
# tries pip for what is missing (the cuda extra; torch==2.13.0 with CUDA for the PyTorch columns).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM

"$PYTHON" -c "import numba.cuda, numpy, networkx, scipy" 2>/dev/null \
    || "$PYTHON" -m pip install -q -e ".[test,cuda]" \
    || echo "gpu.sh: could not install rnnc's dependencies (offline?)" >&2
"$PYTHON" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null \
    || "$PYTHON" -m pip install -q "torch==2.13.0" \
    || echo "gpu.sh: no CUDA PyTorch; the benchmark's PyTorch columns will be empty" >&2

"$PYTHON" - <<'PY'
from numba import cuda
if not cuda.is_available():
    raise SystemExit("gpu.sh: numba sees no CUDA GPU here (driver? numba-cuda?); nothing to run")
dev = cuda.get_current_device()
print("GPU:", dev.name.decode() if isinstance(dev.name, bytes) else dev.name, "compute capability", dev.compute_capability)
PY

echo "== CUDA tests on the device"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/cuda_sim

echo "== CUDA benchmark"
mkdir -p benchmarks/results
report="benchmarks/results/cuda-$(date +%Y%m%d-%H%M%S).md"
"$PYTHON" benchmarks/cuda_bench.py "$@" | tee "$report"
if [ -n "${OUT:-}" ]; then cp "$report" "$OUT/"; fi
echo "written: $report"
