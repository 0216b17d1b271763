"""Every ```python block in README.md and docs/*.md runs, so the docs cannot rot.

Blocks of one file run in order in one namespace (later blocks may use earlier names), in a temporary
working directory. A block is skipped only when the line before it (blank lines aside) is the HTML comment
``<!-- no-test -->``. Code is compiled with the Markdown file's own line numbers, so a failure (and any
``file:line`` rnnc quotes) points into the page.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from paths import REPO as ROOT

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
SKIP = "<!-- no-test -->"
FENCE = re.compile(r"^```(\w*)\s*$")


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """``(first code line number, code, skipped)`` for each ```python block of a Markdown text."""
    blocks, lines, k = [], text.splitlines(), 0
    while k < len(lines):
        m = FENCE.match(lines[k])
        if not m:
            k += 1
            continue
        lang, start = m.group(1), k + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if lang == "python":
            before = [ln for ln in lines[:k] if ln.strip()]
            skipped = bool(before) and before[-1].strip() == SKIP
            blocks.append((start + 1, "\n".join(lines[start:end]), skipped))
        k = end + 1
    return blocks


def test_block_parser_sees_blocks_and_skip_marks():
    text = "# t\n```python\na = 1\n```\n\n<!-- no-test -->\n\n```python\nb = 2\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == [(3, "a = 1", False), (9, "b = 2", True)]


def test_every_page_is_found():
    names = {p.name for p in PAGES}
    assert {"README.md", "index.md", "dsl.md", "architecture.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page: Path, tmp_path, monkeypatch):
    text = page.read_text()
    blocks = python_blocks(text)
    if "render(" in text and shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for line, code, skipped in blocks:
        if skipped:
            continue
        source = "\n" * (line - 1) + code
        try:
            exec(compile(source, str(page), "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{page.relative_to(ROOT)}:{line}: the python block starting here "
                                 f"raised {type(e).__name__}: {e}") from e


def test_dsl_reference_names_every_public_name():
    """docs/dsl.md mentions ``rc.<name>`` for every name rnnc exports, so new public names get documented."""
    import rnnc

    text = (ROOT / "docs" / "dsl.md").read_text()
    missing = [n for n in rnnc.__all__ if not re.search(rf"rc\.{re.escape(n)}\b", text)]
    assert not missing, f"docs/dsl.md does not document rc.{', rc.'.join(missing)}"
