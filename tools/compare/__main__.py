"""`python -m cropshard.tools.compare --measure-reader SPEC`: the reader child process (see measure.py)."""

import sys

from cropshard.tools.compare.cli import main

sys.exit(main(sys.argv[1:]))
