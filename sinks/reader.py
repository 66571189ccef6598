"""Readers of a channel's finished lines, in (partition, offset) order; hidden files ignored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from sinks.files.part_files import finished_files


def channel_dir(base_path: str | Path, filename: str) -> Path:
    """The Contract's layout: channel file `events.jsonl` → `<base_path>/events/`."""
    return Path(base_path) / filename.removesuffix(".jsonl")


def iter_lines(directory: str | Path) -> Iterator[bytes]:
    """Every finished line (without its newline), partition by partition, in offset order."""
    for _partition, line in iter_partition_lines(directory):
        yield line


def iter_partition_lines(directory: str | Path) -> Iterator[tuple[int, bytes]]:
    """(Kafka partition, line) of every finished line, in (partition, offset) order."""
    for part in finished_files(Path(directory)):
        with open(part.path, "rb") as f:
            for line in f:
                yield part.partition, line.rstrip(b"\n")


def read_records(directory: str | Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in iter_lines(directory)]


def read_dataframe(directory: str | Path) -> pd.DataFrame:
    """One row per line; nested objects flattened to dotted columns (`metrics.latency_ms`)."""
    records = read_records(directory)
    return pd.json_normalize(records) if records else pd.DataFrame()
