"""`python -m cropshard.tools.compare`: existing datasets only, and the reader (`--measure-reader`) and training (`--train-plan`) child processes."""

import sys

from cropshard.tools.compare.cli import main

sys.exit(main(sys.argv[1:]))
