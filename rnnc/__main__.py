"""``python -m rnnc``: the ``rnnc`` command (see :mod:`rnnc.cli`)."""
import sys

from rnnc.cli import main

sys.exit(main())
