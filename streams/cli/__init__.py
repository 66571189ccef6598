"""The command line, `json-engine`: one module per command group (see `streams.cli.app`).

`streams.cli:main` is the console script's entry point and `python -m streams.cli` runs it too.
"""

from streams.cli.app import app, main

__all__ = ["app", "main"]
