"""Data-parallel training throughput on this machine: samples/s of 1, 2 (and 4) MPI ranks, one thread each.

    python benchmarks/distributed.py [--ranks 1,2,4] [--rounds 3] [--batch 64] [--steps 12] [--T 50 --I 64 --H 128]
    python benchmarks/distributed.py --model flagship --ranks 1,2,2s [--sync-bn] [--bucket-kb 64]

The model is the LSTM of ``benchmarks/cells.py`` (per-step MSE loss), trained with Adam on random data, float32,
or (``--model flagship``) the Fashion ReSeg classifier of examples/reseg_classifier.py (widths / 4, 28 x 28
random images, momentum SGD). A rank count ending in ``s`` (``2s``) reduces the gradients after the backward pass
(``DataParallel(overlap=False)``), without it buckets start as the backward pass completes their gradients
(``--bucket-kb``: the bucket size, default 4096 as DataParallel's).
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


def _model_and_data(a):
    from rnnc.train import Adam, GradientDescentMomentum

    rng = np.random.default_rng(0)
    n = a.batch * a.steps
    if a.model == "flagship":
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        from reseg_classifier import fashion_reseg

        data = {"x": rng.uniform(0, 255, (n, 1, 28, 28)).astype(np.float32), "y": rng.integers(0, 10, n)}
        return fashion_reseg(), data, GradientDescentMomentum(0.01, 0.9, 0.0005)
    from benchmarks.cells import lstm

    data = {"x": rng.standard_normal((a.T, n, a.I)).astype(np.float32),
            "y": rng.standard_normal((a.T, n, a.H)).astype(np.float32)}
    return lstm(a.I, a.H), data, Adam(1e-3)


def child(a) -> None:
    """One run (inside mpiexec or alone): print one JSON line from rank 0."""
    from rnnc.train import Trainer

    comm = None
    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ:
        from mpi4py import MPI

        from rnnc.train.distributed import DataParallel

        comm = DataParallel(MPI.COMM_WORLD, sync_batchnorm=a.sync_bn, overlap=not a.serial,
                            bucket_bytes=a.bucket_kb << 10)
    model, data, opt = _model_and_data(a)
    if a.sync_bn and comm is None:
        model = (model.build(train=True, sync_batchnorm=True), model.build(train=False))
    tr = Trainer(model, opt, batch_size=a.batch, seed=0, dtype="float32", engine="compiled",
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
                          "allreduce_ms": 1e3 * alone, "params": int(params),
                          "overlapped": comm.overlapped if comm else 0}), flush=True)


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


def launch(spec: str, a) -> dict:
    ranks = int(spec.rstrip("s"))
    args = [sys.executable, os.path.abspath(__file__), "--child", "--batch", str(a.batch), "--steps", str(a.steps),
            "--T", str(a.T), "--I", str(a.I), "--H", str(a.H), "--model", a.model, "--bucket-kb", str(a.bucket_kb)]
    args += ["--sync-bn"] * a.sync_bn + ["--serial"] * spec.endswith("s")
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
    p.add_argument("--model", default="lstm", choices=("lstm", "flagship"))
    p.add_argument("--sync-bn", action="store_true", help="flagship: synchronised batch norm")
    p.add_argument("--bucket-kb", type=int, default=4096)
    p.add_argument("--serial", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    ranks = a.ranks.split(",")
    if any(int(r.rstrip("s")) > 1 for r in ranks) and shutil.which("mpiexec") is None:
        raise SystemExit("mpiexec not found: pip install 'rnnc[mpi]'")
    runs: dict[str, list[dict]] = {r: [] for r in ranks}
    for k in range(a.rounds):
        for r in ranks if k % 2 == 0 else ranks[::-1]:     # alternate the order round by round
            runs[r].append(launch(r, a))
    cores = os.cpu_count() or 1
    med = {r: {key: float(np.median([x[key] for x in rs])) for key in rs[0]} for r, rs in runs.items()}
    base = med[ranks[0]]
    what = f"LSTM T{a.T} B{a.batch} (global) I{a.I} H{a.H}" if a.model == "lstm" else \
        f"Fashion ReSeg flagship B{a.batch} (global){', sync batch norm' * a.sync_bn}, buckets {a.bucket_kb} KiB"
    print(f"{what}, {base['params']:,.0f} params = "
          f"{4 * base['params'] / 1e6:.2f} MB of float32 gradient per step; one thread per rank, {cores} cores; "
          f"load average {os.getloadavg()[0]:.1f}; medians of {a.rounds} rounds")
    print("| ranks | samples/s (all ranks) | efficiency | ms / step | reduction ms / step | Allreduce alone ms "
          "| model ms / step | model efficiency | buckets started early |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in ranks:
        r, m = int(spec.rstrip("s")), med[spec]
        eff = m["samples_s"] / (r * base["samples_s"])
        model = base["step_ms"] / min(r, cores) + m["allreduce_ms"]
        print(f"| {spec} | {m['samples_s']:,.0f} | {eff:.0%} | {m['step_ms']:.1f} | {m['reduce_ms']:.2f} | "
              f"{m['allreduce_ms']:.2f} | {model:.1f} | {base['step_ms'] / (r * model):.0%} | "
              f"{m['overlapped']:.0f} |")
    each = {r: ", ".join(f"{x['samples_s']:.0f}" for x in rs) for r, rs in runs.items()}
    print("runs (samples/s): " + "; ".join(f"{r}: {v}" for r, v in each.items()))


if __name__ == "__main__":
    main()
