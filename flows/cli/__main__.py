"""``python -m flows.cli``: the command line (multi-process runs start their workers so)."""

import sys

from flows.cli.main import main

sys.exit(main())
