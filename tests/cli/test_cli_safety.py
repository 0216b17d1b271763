"""The ``rnnc`` command at its boundary: every failure of the user's file, data or arguments is one line
``FILE:LINE: error: Kind: message`` on stderr with exit code 2 (``--traceback`` adds the traceback), for every
subcommand. Run in-process through :func:`rnnc.cli.main` on tiny models; nothing here compiles a kernel."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from paths import EXAMPLES

from rnnc.cli import COMMANDS, main

HEAD = ["import sys", "import numpy as np", "import rnnc as rc", "from rnnc import t", ""]
MARK = "  # <- here"


def tiny(loop: bool) -> list[str]:
    """A two-unit Elman model with a loss; ``loop`` reads ``h[t]`` instead of ``h[t-1]`` (an algebraic loop)."""
    return ["def tiny():",
            '    m = rc.Model("tiny")',
            '    x = m.input("x", 2)',
            '    W = m.param("W", (2, 2))',
            '    h = m.signal("h", 2)',
            f"    h[t] = rc.tanh(W @ x[t] + h[t{'' if loop else '-1'}])" + (MARK if loop else ""),
            "    m.loss(rc.fsum(h[t] * h[t]))",
            "    return m",
            ""]


def entry(command: str, kind: str) -> list[str]:
    """What the command looks for: ``build()`` for a MODEL.py, ``train()``/``predict()`` for an example."""
    name, signature = {"train": ("train", "steps=1, seed=0, save=None"),
                       "predict": ("predict", "params, prompt=None")}.get(command, ("build", ""))
    wrong = "n" if name == "build" else ""                          # build() gets no argument, the others some
    lines = [f"def {name}({wrong}):{MARK}" if kind == "signature" else f"def {name}({signature}):"]
    if kind == "build":
        lines.append(f'    raise ValueError("broken inside {name}()"){MARK}')
    lines.append("    m = tiny()")
    if name == "build":
        return [*lines, "    return m", ""]
    return [*lines, "    out = rc.interpret(m, {'x': np.ones((2, 1, 2))}, m.init_params())",
            "    return {'loss': float(out.loss)}", ""]


KINDS = {"import": "RuntimeError", "build": "ValueError", "signature": "TypeError", "exit": "SystemExit",
         "loop": "CycleError", "syntax": "SyntaxError"}


def broken_file(folder: Path, command: str, kind: str) -> tuple[Path, int]:
    """A user file for ``command`` that fails in the way ``kind`` names, and the line the error must quote."""
    lines = [*HEAD, *tiny(kind == "loop"), *entry(command, kind)]
    if kind == "import":
        lines.insert(len(HEAD), f'raise RuntimeError("broken at import"){MARK}')
    elif kind == "exit":
        lines.insert(len(HEAD), f"sys.exit(0){MARK}")
    elif kind == "syntax":
        lines.append('model = rc.Model("unclosed"')
    path = folder / f"{command}_{kind}.py"
    path.write_text("\n".join(lines) + "\n")
    line = len(lines) if kind == "syntax" else next(k for k, s in enumerate(lines, 1) if s.endswith(MARK))
    return path, line


def argv(command: str, path: Path, folder: Path) -> list[str]:
    """A command line for ``command`` on ``path``, with the smallest sizes."""
    params = folder / "params.npz"
    np.savez(params, W=np.eye(2))
    extra = {"render": ["-o", str(folder / "drawing.dot")],
             "gradcheck": ["--size", "t=2", "--batch", "1", "--entries", "1"],
             "bench": ["--no-compiled", "--size", "t=2", "--batch", "1", "--repeat", "1"],
             "train": ["--steps", "1"],
             "predict": ["--params", str(params)]}
    return [command, str(path), *extra.get(command, [])]


def run(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    return lines[0]


def test_every_subcommand_is_covered():
    assert {c.name for c in COMMANDS} == {"render", "schedule", "gradcheck", "compile", "summary", "bench",
                                          "train", "predict"}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_a_broken_user_file_is_one_line(tmp_path, capsys, command, kind):
    path, line = broken_file(tmp_path, command, kind)
    code, out, err = run(capsys, argv(command, path, tmp_path))
    assert code == 2, out + err
    first = one_error_line(err)
    assert first.startswith(f"{path}:{line}: error: {KINDS[kind]}: "), first
    assert "Traceback" not in out + err

    code, _, err = run(capsys, ["--traceback", *argv(command, path, tmp_path)])
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith(first.split(": error: ")[0])   # the one line closes it


def test_messages_of_the_special_cases(tmp_path, capsys):
    path, line = broken_file(tmp_path, "schedule", "exit")
    _, _, err = run(capsys, ["schedule", str(path)])
    assert "model file called sys.exit(0) while being loaded" in err
    path, line = broken_file(tmp_path, "schedule", "signature")
    _, _, err = run(capsys, ["schedule", str(path)])
    assert "build() missing a required argument: 'n'" in err and "rnnc calls build()" in err
    path, line = broken_file(tmp_path, "schedule", "loop")
    _, _, err = run(capsys, ["schedule", str(path)])
    assert "h[t-1]" in one_error_line(err) and "algebraic loop" in err


def test_traceback_flag_after_the_subcommand(tmp_path, capsys):
    path, line = broken_file(tmp_path, "schedule", "build")
    code, _, err = run(capsys, ["schedule", str(path), "--traceback"])
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith(f"{path}:{line}: error: ValueError: broken inside build()")


@pytest.mark.parametrize("args, option", [
    (["summary", "{elman}", "--batch", "-3"], "--batch"),
    (["summary", "{elman}", "--batch", "0"], "--batch"),
    (["summary", "{elman}", "--size", "t=0"], "--size"),
    (["summary", "{elman}", "--input-shape", "3,-1"], "--input-shape"),
    (["render", "{elman}", "--unroll", "t=-3", "-o", "{tmp}/x.svg"], "--unroll"),
    (["render", "{elman}", "--unroll", "t4", "-o", "{tmp}/x.svg"], "--unroll"),
    (["render", "{elman}", "--unroll", "k=4", "-o", "{tmp}/x.svg"], "--unroll"),
    (["render", "{elman}", "-o", "{tmp}/x.jpg"], "-o/--output"),
    (["gradcheck", "{elman}", "--tol", "-1"], "--tol"),
    (["gradcheck", "{elman}", "--entries", "0"], "--entries"),
    (["gradcheck", "{elman}", "--seed", "-1"], "--seed"),
    (["bench", "{elman}", "--repeat", "0"], "--repeat"),
    (["bench", "{elman}", "--batch", "two"], "--batch"),
    (["train", "{elman}", "--epochs", "0"], "--epochs"),
    (["train", "{elman}", "--steps", "-1"], "--steps"),
    (["predict", "{elman}", "--params", "{tmp}/missing.npz"], "--params"),
    (["predict", "{elman}", "--params", "{elman}"], "--params"),
])
def test_bad_arguments_are_one_line_naming_the_option(tmp_path, capsys, args, option):
    elman = EXAMPLES / "elman.py"
    if args[0] == "predict" and "missing" not in args[-1]:          # an existing file that is no params file
        args = ["predict", "{hello}", "--params", "{elman}"]
    hello = elman.with_name("hello.py")
    code, out, err = run(capsys, [a.format(elman=elman, hello=hello, tmp=tmp_path) for a in args])
    assert code == 2, out + err
    assert one_error_line(err).startswith(f"{option}: error: "), err
    assert "-3" not in out                                           # nothing printed with the bad size


def test_missing_output_folders_are_created(tmp_path, capsys):
    example = tmp_path / "saver.py"
    example.write_text("import numpy as np\n\ndef train(steps=1, seed=0, save=None):\n"
                       "    np.savez(save, W=np.eye(2))\n    return {'loss': 0.5}\n")
    target = tmp_path / "out" / "deeper" / "h.npz"
    code, out, err = run(capsys, ["train", str(example), "--save", str(target)])
    assert code == 0, err
    assert target.exists() and f"wrote {target}" in out
    elman = EXAMPLES / "elman.py"
    drawing = tmp_path / "drawings" / "new" / "elman.dot"
    code, out, err = run(capsys, ["render", str(elman), "-o", str(drawing)])
    assert code == 0, err
    assert drawing.exists() and "digraph" in drawing.read_text()


def test_output_folder_that_cannot_be_created(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    elman = EXAMPLES / "elman.py"
    code, _, err = run(capsys, ["render", str(elman), "-o", str(tmp_path / "afile" / "x.svg")])
    assert code == 2
    assert re.match(r"\S+x\.svg: error: cannot create the folder", one_error_line(err)), err


def test_sys_exit_and_bad_results_while_training(tmp_path, capsys):
    example = tmp_path / "quits.py"
    example.write_text("import sys\n\ndef train(steps=1, seed=0, save=None):\n    sys.exit(3)\n")
    code, _, err = run(capsys, ["train", str(example)])
    assert code == 2
    assert one_error_line(err) == f"{example}:4: error: SystemExit: train() called sys.exit(3)"
    example.write_text("def train(steps=1, seed=0, save=None):\n    return None\n")
    code, _, err = run(capsys, ["train", str(example)])
    assert code == 2 and one_error_line(err).startswith(f"{example}:1: error: train() returned NoneType")
    code, _, err = run(capsys, ["train", str(example), "--epochs", "2"])
    assert code == 2 and "unexpected keyword argument 'epochs'" in one_error_line(err)


def test_keyboard_interrupt_exits_130_with_one_line(tmp_path, capsys):
    path = tmp_path / "interrupted.py"
    path.write_text("import rnnc as rc\nraise KeyboardInterrupt\n")
    code, _, err = run(capsys, ["schedule", str(path)])
    assert code == 130
    assert one_error_line(err) == f"{path}:2: interrupted (KeyboardInterrupt)"


def test_an_rnnc_bug_keeps_its_traceback(monkeypatch, capsys):
    import rnnc.cli as cli

    def broken(*args, **kwargs):
        raise RuntimeError("an rnnc bug")

    monkeypatch.setattr(cli, "model_table", broken)
    elman = EXAMPLES / "elman.py"
    with pytest.raises(RuntimeError, match="an rnnc bug"):
        main(["summary", str(elman)])


def test_help_and_version_return_zero(capsys):
    assert main(["--help"]) == 0 and "schedule" in capsys.readouterr().out
    assert main(["schedule", "--help"]) == 0 and "--traceback" in capsys.readouterr().out
    assert main([]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("rnnc: error: ")
