"""docs/flagship.md shows what ``python examples/reseg_classifier.py summary`` prints, line for line."""
import re
import sys

from paths import EXAMPLES, REPO

sys.path.insert(0, str(EXAMPLES))

import reseg_classifier as R  # noqa: E402


def test_the_docs_summary_block_is_what_the_command_prints(capsys):
    R.main(["summary"])
    printed = capsys.readouterr().out
    page = (REPO / "docs" / "flagship.md").read_text()
    block = re.search(r"`python examples/reseg_classifier.py summary` prints:\n\n```text\n(.*?)```", page, re.S)
    assert block is not None
    assert block.group(1) == printed
    # 3 x the forward: each product has two adjoint products (the input BatchNorm's params need the first conv's dL/dx)
    assert "forward 90,437,976,064 FLOPs, training step 271,313,928,192 FLOPs" in printed
