"""`python -m pipeline build ...` is `cropshard build ...`."""

import sys

from pipeline.cli import main

sys.exit(main())
