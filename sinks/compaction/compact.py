"""Compaction of a channel's closed buckets into Parquet, on a directory or on S3.

Outside the worker, as its own command: the worker's batch thread stays as it is, and a
compaction that fails or is killed costs nothing but a re-run. For each bucket folder and
partition whose JSONL files are not yet covered by a Parquet file:

1. **Closed?** The bucket's hour ended `grace_ms` before the start of the newest bucket the
   partition has finished files in (a lower bound of its stream time, read from the files
   alone, so the same on S3), or by `until` when the operator names a time.
2. **One Parquet file** `pNNN-<first>-<last>.parquet` in the bucket folder, from the lines
   of those JSONL files in offset order; `first`/`last` are their smallest first and largest
   last offsets. It is published whole or not at all: a hidden temp file, fsync, `link(2)`
   (never replaces a name), directory fsync; on S3 a conditional PUT (If-None-Match). A
   re-run after a kill makes the same name with the same rows, and finds it there.
3. **Then**, if asked, the JSONL files it covers are removed (readers skip them already).

Late records: the files of one bucket and partition follow each other in offset order (one
open file per bucket per writer; a new owner starts after the committed offset), so a file
finished after compaction starts past `last` and is read as JSONL until a later run
compacts it into its own Parquet file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinks.atomic import fsync_dir, open_temp, sync_file
from sinks.files.buckets import HOUR_MS, bucket_start
from sinks.files.listing import bucketed_paths
from sinks.files.names import PartFile, parquet_name
from sinks.formats.parquet import parquet_bytes, table_of
from sinks.reader import part_lines
from sinks.s3.listing import bucketed_objects
from sinks.s3.location import S3Location
from sinks.s3.store import store_of

log = logging.getLogger(__name__)
STALE_TEMP_SECONDS = 3600  # a compactor's temp file older than this was left by a kill


@dataclass
class Summary:
    """What one run did to one channel."""

    parquet_files: int = 0
    rows: int = 0
    jsonl_removed: int = 0
    skipped: list[str] = field(default_factory=list)  # buckets left as JSONL, and why


def _bucket(part: PartFile) -> str:
    folder = part.path.parent
    return f"{folder.parent.name}/{folder.name}"


def compact_channel(
    directory: Path | S3Location,
    json_schema: dict[str, Any],
    grace_ms: int,
    until: int | None = None,
    delete_jsonl: bool = False,
) -> Summary:
    """Compact every closed bucket and partition of one channel directory (or S3 prefix)."""
    on_s3 = isinstance(directory, S3Location)
    parts = bucketed_objects(directory) if on_s3 else bucketed_paths(directory)
    groups: dict[tuple[str, int], list[PartFile]] = defaultdict(list)
    newest: dict[int, int] = {}
    for part in parts:
        groups[(_bucket(part), part.partition)].append(part)
        start = bucket_start(_bucket(part))
        newest[part.partition] = max(newest.get(part.partition, start), start)
    summary = Summary()
    for (bucket, partition), members in sorted(groups.items()):
        end = bucket_start(bucket) + HOUR_MS
        closed = end <= until if until is not None else end + grace_ms <= newest[partition]
        if not closed:
            continue
        parquet = [p for p in members if p.is_parquet]
        todo = sorted(
            (p for p in members if not p.is_parquet and not any(q.covers(p) for q in parquet)),
            key=lambda p: p.first,
        )
        if todo:
            rows = [(line, p.first) for p in todo for line in part_lines(p)]
            try:
                data = parquet_bytes(table_of(rows, partition, json_schema))
            except UnicodeDecodeError:
                summary.skipped.append(f"{bucket} p{partition}: a line is not UTF-8")
                continue
            name = parquet_name(partition, todo[0].first, todo[-1].last)
            target = todo[0].path.parent / name
            if isinstance(target, S3Location):
                _publish_object(target, data)
            else:
                _publish_file(target, data)
            parquet.append(PartFile(target, partition, todo[0].first, todo[-1].last))
            summary.parquet_files += 1
            summary.rows += len(rows)
        if delete_jsonl:
            covered = [p for p in members if any(q.covers(p) for q in parquet)]
            summary.jsonl_removed += _remove(covered, on_s3)
        if not on_s3:
            _drop_stale_temps(members[0].path.parent)
    return summary


def _publish_file(target: Path, data: bytes) -> None:
    """Whole or not at all, never over an existing name (a re-run finds its own file)."""
    with open_temp(target.parent, target.name) as (f, temp):
        f.write(data)
        sync_file(f)
        try:
            os.link(temp, target)
        except FileExistsError:
            log.info("%s was published by an earlier run", target)
        finally:
            temp.unlink()
    fsync_dir(target.parent)


def _publish_object(target: S3Location, data: bytes) -> None:
    if not store_of(target).put_new(target, data):
        log.info("%s was published by an earlier run", target)


def _remove(covered: list[PartFile], on_s3: bool) -> int:
    """Remove JSONL files a published Parquet file covers (only after it is durable)."""
    if not covered:
        return 0
    if on_s3:
        first = covered[0].path
        assert isinstance(first, S3Location)
        return store_of(first).delete(first.bucket, [p.path.key for p in covered])  # type: ignore[union-attr]
    for part in covered:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part.path)  # type: ignore[arg-type]
    fsync_dir(covered[0].path.parent)  # type: ignore[arg-type]
    return len(covered)


def _drop_stale_temps(folder: Path) -> None:
    """A compactor killed between its temp file and the link leaves a hidden temp file."""
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if (
                entry.name.startswith(".p")
                and entry.name.endswith(".tmp")
                and ".parquet." in entry.name
            ):
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
                        os.unlink(entry.path)
