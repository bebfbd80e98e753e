"""The ``hedgeflow`` command line and its tools (no dataflow lives here).

``main.py`` holds the commands; beside it are the tools they run: the demo, the dev
chain, the synthetic-data generator, the Greeks and margin calculators, the output
summary and the process runner.
"""

from flows.cli.main import main

__all__ = ["main"]
