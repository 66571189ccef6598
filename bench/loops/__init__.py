"""Programs the benchmark runs as child processes, one per contender repetition.

Each reads the workload topic from the group it is given, writes every event as one line to
`--out`, and creates `--out` + `.done` once all `--events` lines are written and fsynced.
"""

import argparse
from pathlib import Path


def loop_args(
    description: str, argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """The arguments every loop takes; pass a `parser` with extra options of its own."""
    parser = parser or argparse.ArgumentParser()
    parser.description = description.splitlines()[0]
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)
