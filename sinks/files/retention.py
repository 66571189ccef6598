"""Retention: whole time buckets older than `output.retention_days` go, file by file.

A bucket is deleted only when no in-progress file of any writer is still headed for it (its
name carries the bucket), so a bucket that is still being written stays. Only finished
part files are deleted, each whole (a reader sees a file or no file, never half of one);
the emptied folders go after them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sinks.files.buckets import HOUR_MS, bucket_start, buckets
from sinks.files.names import FINISHED, IN_PROGRESS, IN_PROGRESS_DIR, code_bucket
from sinks.s3.location import S3Location


def headed_for(directory: Path) -> set[str]:
    """Buckets some in-progress file will be finished into."""
    found = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory / IN_PROGRESS_DIR):
            m = IN_PROGRESS.match(entry.name)
            if m:
                found.add(code_bucket(m.group(4)))
    return found


def delete_before(directory: Path | S3Location, cutoff_ms: int) -> int:
    """Delete the finished files of every bucket that ended at or before `cutoff_ms`;
    return how many files went (objects, below an `s3://` location: sinks/s3/retention.py)."""
    if isinstance(directory, S3Location):
        from sinks.s3 import retention

        return retention.delete_before(directory, cutoff_ms)
    busy = headed_for(directory)
    deleted = 0
    for name, path in sorted(buckets(directory)):
        if bucket_start(name) + HOUR_MS > cutoff_ms or name in busy:
            continue
        for entry in os.scandir(path):
            if FINISHED.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    deleted += 1
        with contextlib.suppress(OSError):  # not empty: something else lives there
            path.rmdir()
            path.parent.rmdir()
    return deleted
