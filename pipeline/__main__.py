"""`python -m cropshard.pipeline build ...` is `cropshard build ...`."""

import sys

from cropshard.pipeline.cli import main

sys.exit(main())
