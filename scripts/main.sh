#!/usr/bin/env bash
# The main job: install what rnnc needs, then build the Elman model, print its schedule and draw it
# folded and unrolled into out/.   Usage: bash scripts/main.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ensure_system
ensure_rnnc test
mkdir -p out

echo "== rnnc $("$PYTHON" -c 'import rnnc; print(rnnc.__version__)'): the Elman model (examples/elman.py)"
"$PYTHON" -m rnnc.cli schedule examples/elman.py
"$PYTHON" -m rnnc.cli render examples/elman.py -o out/elman.svg
"$PYTHON" -m rnnc.cli render examples/elman.py --unroll t=4 -o out/elman_unrolled.svg
"$PYTHON" - <<'PY'
import numpy as np
import rnnc as rc
from rnnc.cli import load_model

m = load_model("examples/elman.py")
rng = np.random.default_rng(0)
X, Y = rng.normal(size=(6, 3, 8)), rng.integers(0, 4, size=(6, 3))
out = rc.interpret(m, {"x": X, "y": Y}, m.init_params(seed=0))
print(f"interpreted in numpy: o {out.outputs['o'].shape}, loss {out.loss:.4f} (T=6, B=3)")
PY
echo "== done: drawings in out/"
