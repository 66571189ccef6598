"""Retention: whole time buckets older than `output.retention_days` go, file by file.

A bucket is deleted only when no in-progress file of any writer is still headed for it (its
name carries the bucket), so a bucket that is still being written stays. Only finished
part files are deleted, each whole (a reader sees a file or no file, never half of one);
the emptied folders go after them.

Two more rules let retention and recovery share a directory without fighting:
- The bucket of a file that a committed checkpoint still names is spared: the file is open,
  or its writer finished it after the commit and until the next commit a new owner's
  recovery expects to find it (`named`, asked *after* the files were listed: a file finished
  before that is named there or never again). The recovery, in turn, tolerates a committed
  file that is gone from a bucket `expired` says retention may have deleted
  (sinks/files/part_files.py).
- Several workers may run it at once on one directory: a file or folder that another one
  deleted first is no error.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

from sinks.files.buckets import HOUR_MS, bucket_start, buckets
from sinks.files.names import FINISHED, IN_PROGRESS, IN_PROGRESS_DIR, PARQUET, code_bucket

DAY_MS = 24 * HOUR_MS
# What committed checkpoints name, as `<bucket>/<finished name>` below the channel directory.
Named = Callable[[], Collection[str]]


def cutoff(retention_days: float | None, now_ms: float | None = None) -> int | None:
    """Buckets that ended at or before this time (epoch ms) are past retention; None: off."""
    if retention_days is None:
        return None
    now = time.time() * 1000 if now_ms is None else now_ms
    return int(now - retention_days * DAY_MS)


def expired(bucket: str, cutoff_ms: int | None) -> bool:
    """Retention's one decision, for deleting and for recovering: the bucket ended at or
    before the cutoff. A folder name that is not a bucket of ours never is."""
    if cutoff_ms is None:
        return False
    try:
        return bucket_start(bucket) + HOUR_MS <= cutoff_ms
    except (ValueError, IndexError):
        return False


def named_buckets(named: Named) -> set[str]:
    """The buckets of the files committed checkpoints name: their open files are headed for
    them, and a recovery would look there for the ones finished since."""
    return {key.rsplit("/", 1)[0] for key in named()}


def headed_for(directory: Path) -> set[str]:
    """Buckets some in-progress file will be finished into."""
    found = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory / IN_PROGRESS_DIR):
            m = IN_PROGRESS.match(entry.name)
            if m:
                found.add(code_bucket(m.group(4)))
    return found


def delete_before(directory: Path, cutoff_ms: int, named: Named = frozenset) -> int:
    """Delete the finished files of every bucket that ended at or before `cutoff_ms`, but
    the buckets of the files `named()` names; return how many files went."""
    busy = headed_for(directory)
    old = sorted((n, p) for n, p in buckets(directory) if expired(n, cutoff_ms) and n not in busy)
    doomed = []
    for name, path in old:
        with contextlib.suppress(FileNotFoundError):  # another worker's retention took it
            for entry in os.scandir(path):
                if FINISHED.match(entry.name) or PARQUET.match(entry.name):
                    doomed.append((f"{name}/{entry.name}", entry.path))
    spared = named_buckets(named) if doomed else set()
    deleted = 0
    for key, path in doomed:
        if key.rsplit("/", 1)[0] not in spared:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                deleted += 1
    for _name, folder in old:
        with contextlib.suppress(OSError):  # not empty (a spared file, something else), or gone
            folder.rmdir()
            folder.parent.rmdir()
    return deleted
