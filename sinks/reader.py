"""Readers of a channel's finished lines, in (partition, offset) order; hidden files ignored.

A channel directory holds time buckets (`date=…/hour=…/`) and, written by older versions,
flat part files: both are read. A DuckDB one-liner over the same files:
`SELECT * FROM read_json_auto('output/events/**/*.jsonl', hive_partitioning = true)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from sinks.files.buckets import bucket_start, event_time
from sinks.files.part_files import PartFile, finished_files


def channel_dir(base_path: str | Path, filename: str) -> Path:
    """The Contract's layout: channel file `events.jsonl` → `<base_path>/events/`."""
    return Path(base_path) / filename.removesuffix(".jsonl")


def iter_lines(
    directory: str | Path, since: int | None = None, until: int | None = None
) -> Iterator[bytes]:
    """Every finished line (without its newline), partition by partition, in offset order;
    with `since` / `until` (epoch ms) only lines whose time is in [since, until)."""
    for _partition, line in iter_partition_lines(directory, since, until):
        yield line


def iter_partition_lines(
    directory: str | Path, since: int | None = None, until: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """(Kafka partition, line) of every finished line, in (partition, offset) order.

    Time bounds open only the buckets that can hold them (sinks/files/buckets.py) and keep
    the lines whose own time (`timestamp`, `created_at`, `window_start`, `received_at`) is in
    range; a line without one is judged by its bucket.
    """
    bounded = since is not None or until is not None
    for part in finished_files(Path(directory), since, until):
        with open(part.path, "rb") as f:
            for raw in f:
                line = raw.rstrip(b"\n")
                if bounded and not _in_range(line, part, since, until):
                    continue
                yield part.partition, line


def _in_range(line: bytes, part: PartFile, since: int | None, until: int | None) -> bool:
    ts = event_time(orjson.loads(line))
    if ts is None:
        if part.path.parent.name.startswith("hour="):
            ts = bucket_start(f"{part.path.parent.parent.name}/{part.path.parent.name}")
        else:
            return True  # the flat layout of older versions: no time to judge by
    return (since is None or ts >= since) and (until is None or ts < until)


def read_records(
    directory: str | Path, since: int | None = None, until: int | None = None
) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in iter_lines(directory, since, until)]


def read_dataframe(
    directory: str | Path, since: int | None = None, until: int | None = None
) -> pd.DataFrame:
    """One row per line; nested objects flattened to dotted columns (`metrics.latency_ms`)."""
    records = read_records(directory, since, until)
    return pd.json_normalize(records) if records else pd.DataFrame()
