"""The ``rnnc`` command line, run as a user runs it: in a subprocess, on MODEL.py files."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from paths import REPO as ROOT

ELMAN = ROOT / "examples" / "elman.py"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


def rnnc(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rnnc.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_help_everywhere():
    top = rnnc("--help")
    assert top.returncode == 0 and "render" in top.stdout and "schedule" in top.stdout
    for cmd in ("render", "schedule"):
        out = rnnc(cmd, "--help")
        assert out.returncode == 0, out.stderr
        assert "MODEL.py" in out.stdout


def test_schedule_prints_the_stages():
    out = rnnc("schedule", ELMAN)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    heads = [ln.split(". ", 1)[1] for ln in lines if ln.strip()[:2] in ("1.", "2.", "3.")]
    assert heads == ["map over t", "scan t forward", "map over t"], out.stdout
    assert any(ln.strip().startswith("h = tanh(") for ln in lines)
    assert any(ln.strip().startswith("loss = ") for ln in lines)


@needs_dot
@pytest.mark.parametrize("extra, name", [((), "folded.svg"), (("--unroll", "t=3"), "unrolled.svg"),
                                         (("--unroll", "t=2"), "unrolled.png")])
def test_render_writes_a_drawing(tmp_path, extra, name):
    target = tmp_path / "sub" / name
    out = rnnc("render", ELMAN, *extra, "-o", target)
    assert out.returncode == 0, out.stderr
    assert target.exists() and target.stat().st_size > 0
    data = target.read_bytes()
    if name.endswith(".svg"):
        assert b"<svg" in data
        if extra:   # one node per step: h[0] .. h[2]
            assert all(f"h[{k}]".encode() in data for k in range(3)), "unrolled drawing lacks h[0..2]"
    else:
        assert data.startswith(b"\x89PNG")


def test_shape_error_quotes_the_users_line(tmp_path):
    bad = write(tmp_path, "bad_model.py", """\
        import rnnc as rc
        from rnnc import t

        model = rc.Model("bad")
        x = model.input("x", 8)
        U = model.param("U", (16, 7))
        h = model.signal("h", 16)
        h[t] = rc.tanh(U @ x[t] + h[t-1])
        """)
    out = rnnc("schedule", bad)
    assert out.returncode == 2
    assert f"{bad}:8" in out.stderr and "ShapeError" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert len(out.stderr.strip().splitlines()) == 1


def test_python_error_in_model_file_points_at_innermost_user_frame(tmp_path):
    bad = write(tmp_path, "oops.py", """\
        import rnnc as rc

        def make():
            sizes = {"hidden": 4}
            return sizes["hiden"]

        model = make()
        """)
    out = rnnc("schedule", bad)
    assert out.returncode == 2
    assert f"{bad}:5" in out.stderr and "KeyError" in out.stderr
    assert "Traceback" not in out.stderr


def test_cycle_error_found_at_lowering_names_the_line(tmp_path):
    bad = write(tmp_path, "loop.py", """\
        import rnnc as rc
        from rnnc import t
        model = rc.Model("loop")
        x = model.input("x", 4)
        h = model.signal("h", 4)
        h[t] = rc.tanh(x[t] + h[t])
        """)
    out = rnnc("schedule", bad)
    assert out.returncode == 2
    assert "CycleError" in out.stderr and f"{bad}:6" in out.stderr
    assert "Traceback" not in out.stderr


def test_syntax_error_names_the_line(tmp_path):
    bad = write(tmp_path, "syn.py", "import rnnc as rc\nmodel = rc.Model('m'\n\n")
    out = rnnc("schedule", bad)
    assert out.returncode == 2 and "SyntaxError" in out.stderr and str(bad) in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("body, expect", [
    ("import rnnc as rc\ndef build():\n    m = rc.Model('built')\n    return m\n", "'built'"),
    ("import rnnc as rc\nonly = rc.Model('only')\n", "'only'"),
])
def test_model_found_by_convention(tmp_path, body, expect):
    """``build()`` or a single Model instance are found when there is no variable ``model``."""
    path = write(tmp_path, "conv.py", body)
    out = rnnc("schedule", path)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout


def test_ambiguous_or_missing_model_is_a_user_error(tmp_path):
    two = write(tmp_path, "two.py", "import rnnc as rc\na = rc.Model('a')\nb = rc.Model('b')\n")
    out = rnnc("schedule", two)
    assert out.returncode == 2 and "several Models (a, b)" in out.stderr
    picked = rnnc("schedule", f"{two}:b")
    assert picked.returncode == 0 and "'b'" in picked.stdout
    none = write(tmp_path, "none.py", "x = 1\n")
    out = rnnc("schedule", none)
    assert out.returncode == 2 and "defines no Model" in out.stderr
    out = rnnc("schedule", tmp_path / "missing.py")
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_bad_unroll_and_output_arguments(tmp_path):
    out = rnnc("render", ELMAN, "--unroll", "t4", "-o", tmp_path / "x.svg")
    assert out.returncode == 2 and "AXIS=SIZE" in out.stderr
    out = rnnc("render", ELMAN, "--unroll", "k=4", "-o", tmp_path / "x.svg")
    assert out.returncode == 2 and "no axis 'k'" in out.stderr and "Traceback" not in out.stderr
    out = rnnc("render", ELMAN, "-o", tmp_path / "x.jpg")
    assert out.returncode == 2 and ".svg, .png" in out.stderr


def test_bare_unroll_size_means_t(tmp_path):
    out = rnnc("render", ELMAN, "--unroll", "4", "-o", tmp_path / "u.svg")
    assert out.returncode == 0, out.stderr
    assert b"h[3]" in (tmp_path / "u.svg").read_bytes()


def test_main_block_of_model_file_does_not_run(tmp_path):
    path = write(tmp_path, "guarded.py", """\
        import rnnc as rc
        model = rc.Model("guarded")
        if __name__ == "__main__":
            raise SystemExit("training would start here")
        """)
    out = rnnc("schedule", path)
    assert out.returncode == 0, out.stderr


def test_model_file_can_import_its_neighbours(tmp_path):
    write(tmp_path, "layers.py", "import rnnc as rc\ndef make():\n    return rc.Model('neighbour')\n")
    path = write(tmp_path, "uses.py", "from layers import make\nmodel = make()\n")
    out = rnnc("schedule", path, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "'neighbour'" in out.stdout


def test_gradcheck_passes_on_elman():
    out = rnnc("gradcheck", ELMAN, "--size", "t=3", "--entries", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln.split() for ln in out.stdout.splitlines()[1:-1]]
    assert sorted(r[0] for r in rows) == ["U", "V", "W", "b", "c"] and all(r[-1] == "pass" for r in rows)
    assert "5/5 params pass" in out.stdout


def test_gradcheck_needs_a_loss(tmp_path):
    path = write(tmp_path, "noloss.py", """\
        import rnnc as rc
        from rnnc import t
        model = rc.Model("noloss")
        x = model.input("x", 2)
        model.output("y", rc.tanh(x[t]))
        """)
    out = rnnc("gradcheck", path)
    assert out.returncode == 2 and "has no loss" in out.stderr


def test_random_inputs_are_valid_for_the_model():
    import numpy as np

    import rnnc as rc
    from rnnc import t
    from rnnc.cli import random_inputs

    m = rc.Model("varlen")
    x = m.input("x", 3, lengths=True)
    y = m.input("y", (), dtype="int")
    img = m.input("img", 2, axes=())
    W = m.param("W", (5, 3))
    m.loss(rc.softmax_cross_entropy(W @ x[t] + rc.fsum(img), y[t]))
    arrays = random_inputs(m, {"t": 6}, batch=4, seed=0)
    assert arrays["x"].shape == (6, 4, 3) and arrays["img"].shape == (4, 2) and arrays["y"].shape == (6, 4)
    assert arrays["y"].min() >= 0 and arrays["y"].max() < 5 and arrays["y"].max() >= 2
    assert 1 <= arrays["x_lengths"].min() and arrays["x_lengths"].max() <= 6
    assert np.isfinite(rc.interpret(m, arrays, m.init_params()).loss)
