"""Readers of a channel's finished lines, in (partition, offset) order; hidden files ignored.

A channel directory holds time buckets (`date=…/hour=…/`) and, written by older versions,
flat part files: both are read. Every reader takes an `s3://bucket/prefix` as well as a
directory (the same layout as objects, sinks/s3/listing.py; endpoint and credentials from the
standard AWS sources, or `output.s3` when the location comes from a config). Compressed
files (`.jsonl.gz`, `.jsonl.zst`: sinks/formats/compression.py) are read like plain ones. A
DuckDB one-liner over the same files:
`SELECT * FROM read_json_auto('output/events/**/*.jsonl*', hive_partitioning = true)`.

Buckets compacted by `json-engine compact` (sinks/compaction/) hold Parquet files, read
here from their `_line` column (the lines exactly as they were): the listings skip the JSONL
files a Parquet file covers (sinks/files/listing.py), and a JSONL file listed but removed
before it is opened is read from the Parquet file that covers it, so a reader sees every
line once whenever the bucket switches formats.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from sinks.files.buckets import bucket_start, event_time
from sinks.files.listing import bucket_paths, finished_paths
from sinks.files.names import PartFile
from sinks.formats.compression import decompressed
from sinks.s3.listing import bucket_objects, finished_objects, open_lines
from sinks.s3.location import S3Location, location
from sinks.s3.store import store_of

if TYPE_CHECKING:  # pandas and pyarrow load on first use: a worker needs neither (~70 MB)
    import pandas as pd
    import pyarrow.parquet as pq

Location = str | Path | S3Location


def channel_dir(base_path: Location, filename: str) -> Path | S3Location:
    """The Contract's layout: channel file `events.jsonl` → `<base_path>/events/` (a folder,
    or a prefix below `s3://bucket/prefix`)."""
    return location(base_path) / filename.removesuffix(".jsonl")


def finished_files(
    directory: Location, since: int | None = None, until: int | None = None
) -> list[PartFile]:
    """Finished part files (or objects) in (partition, offset) order, from the buckets that
    can hold times in [since, until); hidden and foreign names ignored."""
    where = location(directory)
    if isinstance(where, S3Location):
        return finished_objects(where, since, until)
    return finished_paths(where, since, until)


def bucket_files(directory: Location, bucket: str) -> list[PartFile]:
    """The finished part files (or objects) of one time bucket (`date=…/hour=…`), unordered."""
    where = location(directory)
    if isinstance(where, S3Location):
        return bucket_objects(where, bucket)
    return bucket_paths(where, bucket)


def iter_lines(
    directory: Location, since: int | None = None, until: int | None = None
) -> Iterator[bytes]:
    """Every finished line (without its newline), partition by partition, in offset order;
    with `since` / `until` (epoch ms) only lines whose time is in [since, until)."""
    for _partition, line in iter_partition_lines(directory, since, until):
        yield line


def iter_partition_lines(
    directory: Location, since: int | None = None, until: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """(Kafka partition, line) of every finished line, in (partition, offset) order.

    Time bounds open only the buckets that can hold them (sinks/files/buckets.py) and keep
    the lines whose own time (`timestamp`, `created_at`, `window_start`, `received_at`) is in
    range; a line without one is judged by its bucket.
    """
    bounded = since is not None or until is not None
    for part, lines in _in_offset_order(finished_files(directory, since, until)):
        for line in lines:
            if bounded and not _in_range(line, part, since, until):
                continue
            yield part.partition, line


def _in_offset_order(parts: list[PartFile]) -> Iterator[tuple[PartFile, Iterable[bytes]]]:
    """(file, its lines) in (partition, first offset) order. A Parquet file is read as the
    JSONL files it holds (its row groups), each at its own first offset, so compaction does
    not change the order in which lines are read; it stays open until its last one is read."""
    heap: list[tuple[int, int, int, PartFile, Any]] = [
        (p.partition, p.first, n, p, None) for n, p in enumerate(parts)
    ]
    heapq.heapify(heap)
    tie = len(parts)
    while heap:
        partition, _first, _, part, groups = heapq.heappop(heap)
        if not part.is_parquet:
            yield part, part_lines(part)
        elif groups is not None:
            from sinks.formats.parquet import parquet_lines

            parquet, rows = groups
            yield part, parquet_lines(parquet, rows)
        else:
            from sinks.formats.parquet import segments

            parquet = _open_parquet(part)
            if parquet is None:
                continue
            for start, rows in segments(parquet).items():
                tie += 1
                heapq.heappush(heap, (partition, start, tie, part, (parquet, rows)))


def part_lines(part: PartFile) -> Iterator[bytes]:
    """The lines of one finished part file or object, without their newlines. A JSONL file
    gone meanwhile is read from the Parquet file that replaced it (compaction), else it has
    none (retention deleted it). Once open, a file reads whole even if it is removed: an
    unlinked inode lives on while open, and a GET streams the object it found."""
    if part.is_parquet:
        yield from _parquet_lines(part)
        return
    if isinstance(part.path, S3Location):
        found = False
        for line in open_lines(part):
            found = True
            yield line
        if not found:
            yield from _compacted(part)
        return
    try:
        f = open(part.path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        yield from _compacted(part)
        return
    with f, decompressed(f, part.suffix) as lines:
        for raw in lines:
            yield raw.rstrip(b"\n")


def _parquet_lines(part: PartFile, file_first: int | None = None) -> Iterator[bytes]:
    """Every line of a Parquet file, or those of the JSONL file starting at `file_first`."""
    from sinks.formats.parquet import parquet_lines, segments

    parquet = _open_parquet(part)
    if parquet is None:
        return
    groups = None if file_first is None else segments(parquet).get(file_first, [])
    yield from parquet_lines(parquet, groups)


def _open_parquet(part: PartFile) -> pq.ParquetFile | None:
    """The Parquet file (an S3 object is fetched whole); None if it is gone (retention)."""
    import pyarrow.parquet as pq

    if isinstance(part.path, S3Location):
        data = store_of(part.path).get(part.path)
        return None if data is None else pq.ParquetFile(io.BytesIO(data))
    try:
        return pq.ParquetFile(str(part.path))  # open: reads whole even if removed meanwhile
    except FileNotFoundError:
        return None


def _compacted(part: PartFile) -> Iterator[bytes]:
    """The lines of a JSONL file that was compacted and removed after it was listed."""
    folder = part.path.parent
    if not folder.name.startswith("hour="):
        return
    bucket = f"{folder.parent.name}/{folder.name}"
    for other in bucket_files(folder.parent.parent, bucket):
        if other.covers(part):
            yield from _parquet_lines(other, part.first)
            return


def _in_range(line: bytes, part: PartFile, since: int | None, until: int | None) -> bool:
    ts = event_time(orjson.loads(line))
    if ts is None:
        if part.path.parent.name.startswith("hour="):
            ts = bucket_start(f"{part.path.parent.parent.name}/{part.path.parent.name}")
        else:
            return True  # the flat layout of older versions: no time to judge by
    return (since is None or ts >= since) and (until is None or ts < until)


def read_records(
    directory: Location, since: int | None = None, until: int | None = None
) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in iter_lines(directory, since, until)]


def read_dataframe(
    directory: Location, since: int | None = None, until: int | None = None
) -> pd.DataFrame:
    """One row per line; nested objects flattened to dotted columns (`metrics.latency_ms`)."""
    import pandas as pd

    records = read_records(directory, since, until)
    return pd.json_normalize(records) if records else pd.DataFrame()
