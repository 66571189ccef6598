"""Finished part files of a channel directory, by time bucket: the readers' side on the
filesystem (sinks/s3/listing.py is the same on S3; sinks/reader.py picks one)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sinks.files.buckets import buckets_between
from sinks.files.names import FINISHED, PartFile


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


def _finished_in(folder: Path) -> list[PartFile]:
    found = []
    with contextlib.suppress(FileNotFoundError):  # no such bucket, or retention removed it
        for entry in os.scandir(folder):
            m = FINISHED.match(entry.name)
            if m:
                found.append(PartFile(Path(entry.path), *map(int, m.groups())))
    return found
