"""Where things are, for tests in any folder of tests/ (tests/ mirrors rnnc/): import these rather than counting
``Path(__file__).parents[N]``, which breaks whenever a test moves.

``tests/conftest.py`` puts tests/ on ``sys.path``, so ``from paths import REPO`` works from every test file.
"""
from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PACKAGE = REPO / "rnnc"
EXAMPLES = REPO / "examples"
BENCHMARKS = REPO / "benchmarks"
DOCS = REPO / "docs"
# the generated-module cache the suite shares (RNNC_CACHE_DIR unless the caller set one)
CACHE_DIR = str(REPO / ".pytest_cache" / "rnnc")
