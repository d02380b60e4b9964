"""`python -m ht2` runs the command line (torchrun needs a module entry point)."""

import sys

from ht2.cli.main import main

sys.exit(main())
