"""Finished part files of a channel directory, by time bucket: the readers' side on the
filesystem (sinks/s3/listing.py is the same on S3; sinks/reader.py picks one).

A bucket may hold Parquet files made by `json-engine compact` (sinks/compaction/): each
stands in for the JSONL files of its partition inside its offsets, which are then skipped.
A folder is listed twice, one listing after the other, and the union is read: the compactor
publishes a Parquet file before it removes any JSONL file it covers, so if the Parquet file
appeared after the second listing began, every JSONL file it covers was still there during
the whole first listing; else the second listing sees it. (One `readdir` is no snapshot: an
entry added or removed meanwhile may or may not be returned.)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sinks.files.buckets import buckets, buckets_between
from sinks.files.names import FINISHED, PARQUET, PartFile, uncovered


def bucket_paths(directory: Path, bucket: str) -> list[PartFile]:
    """The finished part files of one time bucket (`date=…/hour=…`), unordered."""
    return _finished_in(directory / bucket)


def finished_paths(
    directory: Path, since: int | None = None, until: int | None = None
) -> list[PartFile]:
    """Finished part files in (partition, offset) order, from the buckets that can hold times
    in [since, until) and the flat layout of older versions; hidden and foreign names ignored."""
    found = []
    for folder in [directory, *buckets_between(directory, since, until)]:
        found += _finished_in(folder)
    return sorted(found, key=lambda f: (f.partition, f.first))


def bucketed_paths(directory: Path) -> list[PartFile]:
    """Every finished JSONL and Parquet file in the buckets, covered ones too (compaction)."""
    found = []
    for _name, folder in buckets(directory):
        found += _listed(folder, _names(folder))
    return found


def _finished_in(folder: Path) -> list[PartFile]:
    names = _names(folder) | _names(folder)  # the second listing begins after the first ends
    return uncovered(_listed(folder, names))


def _listed(folder: Path, names: set[str]) -> list[PartFile]:
    found = []
    for name in names:
        m = FINISHED.match(name) or PARQUET.match(name)
        if m:
            found.append(PartFile(folder / name, *map(int, m.groups())))
    return found


def _names(folder: Path) -> set[str]:
    with contextlib.suppress(FileNotFoundError):  # no such bucket, or retention removed it
        return {entry.name for entry in os.scandir(folder)}
    return set()
