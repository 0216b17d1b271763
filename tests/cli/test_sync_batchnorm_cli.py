"""``rnnc train MODEL.py --data ... --distributed --sync-batchnorm`` on a user's own model file: the file's
``build(sync_batchnorm=...)`` is called with True and trains with synchronised batch norm (the collective op in
its graph); a ``build()`` that cannot take it is refused with one line saying how to write it, as is the flag
without ``--distributed``. One process here (``MPI.COMM_WORLD`` of size 1, where synchronised batch norm equals
the per-rank one); two real ranks are ``tests/train/test_distributed.py``'s."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from paths import CACHE_DIR, REPO

pytest.importorskip("mpi4py", reason="--distributed needs mpi4py (pip install 'rnnc[mpi]')")

BNNET = textwrap.dedent('''
    """A batch-normalised Elman tagger whose build() takes sync_batchnorm."""
    import json
    from pathlib import Path

    import rnnc as rc
    import rnnc.nn as nn
    from rnnc import t
    from rnnc.ops.registry import ops_with


    def build(sync_batchnorm=False):
        net = nn.Network(rc.Model("bnnet"), sync_batchnorm=sync_batchnorm)
        x = net.model.input("x", 3)
        y = net.model.input("y", (), dtype="int64")
        h = nn.Elman(6)(net, nn.BatchNorm()(net, x))
        o = nn.Dense(2)(net, h)
        net.model.output("o", o)
        net.model.loss(rc.softmax_cross_entropy(o, y[t]))
        collective = sorted({n.op for n in net.model.graph.nodes} & set(ops_with(collective=True)))
        Path(__file__).with_suffix(".json").write_text(json.dumps({"sync": sync_batchnorm, "ops": collective}))
        return net.model
''')


def _train(folder, model: str, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RNNC_CACHE_DIR": os.environ.get("RNNC_CACHE_DIR", CACHE_DIR), "NUMBA_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rnnc", "train", str(folder / model), "--data", str(folder / "train.npz"),
           "--epochs", "1", "--batch", "8", "--engine", "interpret", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 24, 3))
    np.savez(tmp_path / "train.npz", x=x, y=(x[..., 0] > 0).astype(np.int64))
    (tmp_path / "bnnet.py").write_text(BNNET)
    (tmp_path / "plain.py").write_text(BNNET.replace("def build(sync_batchnorm=False):",
                                                     "def build():\n    sync_batchnorm = False"))
    return tmp_path


def test_build_is_called_with_sync_batchnorm_and_trains(folder):
    import json

    out = _train(folder, "bnnet.py", "--distributed", "--sync-batchnorm")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "epoch 1/1  loss" in out.stdout
    built = json.loads((folder / "bnnet.json").read_text())
    assert built == {"sync": True, "ops": ["cross_rank_mean"]}        # the global batch's statistics


def test_a_build_without_the_parameter_is_refused_saying_how(folder):
    out = _train(folder, "plain.py", "--distributed", "--sync-batchnorm")
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("--sync-batchnorm: error: the network of model 'bnnet' has per-rank batch norm")
    assert "build(sync_batchnorm=True)" in line and "nn.Network(m, sync_batchnorm=sync_batchnorm)" in line


def test_sync_batchnorm_needs_distributed(folder):
    out = _train(folder, "bnnet.py", "--sync-batchnorm")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == ("--sync-batchnorm: error: --sync-batchnorm synchronises batch "
                                                  "norm across the ranks of --distributed training")
