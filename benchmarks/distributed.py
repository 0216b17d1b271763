"""Data-parallel training throughput on this machine: samples/s of 1, 2 (and 4) MPI ranks, one thread each.

    python benchmarks/distributed.py [--ranks 1,2,4] [--rounds 3] [--batch 64] [--steps 12] [--T 50 --I 64 --H 128]

The model is the LSTM of ``benchmarks/cells.py`` (per-step MSE loss), trained with Adam on random data, float32.
Every run trains the same global batch (``--batch`` rows, cut into one part per rank) for two epochs of
``--steps`` steps and reports the second (compiled kernels loaded, pages touched). The rank counts take turns
``--rounds`` times, so all see the same machine load; the table gives medians. ``1`` is one plain process (no
MPI); ``N > 1`` runs ``mpiexec -n N`` (with ``--oversubscribe`` and, as root, ``--allow-run-as-root``).

Columns: samples/s (all ranks together), efficiency ``S_N / (N S_1)``, ms per step, the part of a step spent
in the gradient reduction (packing, waiting, unpacking; rank 0), the time of one blocking ``Allreduce`` of the
same bytes alone, and the cost model's prediction ``T_N = T_1 / min(N, cores) + t_allreduce`` (docs/distributed.md).
"""
from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def child(a) -> None:
    """One run (inside mpiexec or alone): print one JSON line from rank 0."""
    from benchmarks.cells import lstm
    from rnnc.train import Adam, Trainer

    comm = None
    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ:
        from mpi4py import MPI

        from rnnc.train.distributed import DataParallel

        comm = DataParallel(MPI.COMM_WORLD)
    rng = np.random.default_rng(0)
    n = a.batch * a.steps
    data = {"x": rng.standard_normal((a.T, n, a.I)).astype(np.float32),
            "y": rng.standard_normal((a.T, n, a.H)).astype(np.float32)}
    tr = Trainer(lstm(a.I, a.H), Adam(1e-3), batch_size=a.batch, seed=0, dtype="float32", engine="compiled",
                 progress=False, comm=comm)
    tr.fit(data, epochs=1)
    comm0 = comm.comm_seconds if comm else 0.0
    row = tr.fit(data, epochs=2)[-1]
    params = sum(v.size for v in tr.params.values())
    alone = _allreduce_alone(comm, params) if comm else 0.0
    if comm is None or comm.is_root:
        ranks = comm.size if comm else 1
        print(json.dumps({"ranks": ranks, "samples_s": row["samples_s"], "step_ms": 1e3 * row["seconds"] / a.steps,
                          "reduce_ms": 1e3 * ((comm.comm_seconds if comm else 0.0) - comm0) / a.steps,
                          "allreduce_ms": 1e3 * alone, "params": int(params)}), flush=True)


def _allreduce_alone(dp, count: int) -> float:
    """Median time of one blocking Allreduce of ``count`` float32 (the gradient's bytes), nothing else running."""
    from mpi4py import MPI

    buf = np.ones(count, dtype=np.float32)
    times = []
    for _ in range(15):
        dp.comm.Barrier()
        t0 = time.perf_counter()
        dp.comm.Allreduce(MPI.IN_PLACE, buf)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[3:]))


def launch(ranks: int, a) -> dict:
    args = [sys.executable, os.path.abspath(__file__), "--child", "--batch", str(a.batch), "--steps", str(a.steps),
            "--T", str(a.T), "--I", str(a.I), "--H", str(a.H)]
    if ranks > 1:
        root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
        args = ["mpiexec", *root, "--oversubscribe", "-n", str(ranks), *args]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--T", type=int, default=50)
    p.add_argument("--I", type=int, default=64)
    p.add_argument("--H", type=int, default=128)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    ranks = [int(r) for r in a.ranks.split(",")]
    if any(r > 1 for r in ranks) and shutil.which("mpiexec") is None:
        raise SystemExit("mpiexec not found: pip install 'rnnc[mpi]'")
    runs: dict[int, list[dict]] = {r: [] for r in ranks}
    for k in range(a.rounds):
        for r in ranks if k % 2 == 0 else ranks[::-1]:     # alternate the order round by round
            runs[r].append(launch(r, a))
    cores = os.cpu_count() or 1
    med = {r: {key: float(np.median([x[key] for x in rs])) for key in rs[0]} for r, rs in runs.items()}
    base = med[min(ranks)]
    print(f"LSTM T{a.T} B{a.batch} (global) I{a.I} H{a.H}, {base['params']:,.0f} params = "
          f"{4 * base['params'] / 1e6:.2f} MB of float32 gradient per step; one thread per rank, {cores} cores; "
          f"load average {os.getloadavg()[0]:.1f}; medians of {a.rounds} rounds")
    print("| ranks | samples/s (all ranks) | efficiency | ms / step | reduction ms / step | Allreduce alone ms "
          "| model ms / step | model efficiency |")
    print("|---|---|---|---|---|---|---|---|")
    for r in ranks:
        m = med[r]
        eff = m["samples_s"] / (r * base["samples_s"])
        model = base["step_ms"] / min(r, cores) + m["allreduce_ms"]
        print(f"| {r} | {m['samples_s']:,.0f} | {eff:.0%} | {m['step_ms']:.1f} | {m['reduce_ms']:.2f} | "
              f"{m['allreduce_ms']:.2f} | {model:.1f} | {base['step_ms'] / (r * model):.0%} |")
    each = {r: ", ".join(f"{x['samples_s']:.0f}" for x in rs) for r, rs in runs.items()}
    print("runs (samples/s): " + "; ".join(f"{r}: {v}" for r, v in each.items()))


if __name__ == "__main__":
    main()
