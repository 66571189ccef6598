"""`python -m streams.cli …`, as the console script (tests and the demo start workers so)."""

from streams.cli.app import main

main()
