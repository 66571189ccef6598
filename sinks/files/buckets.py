"""Hive-style time buckets of a channel directory: `date=YYYY-MM-DD/hour=HH/`.

A record's bucket is the hour of its own event time — `timestamp` (executions,
comparisons), `created_at` (training samples), `window_start` (aggregated stats),
`received_at` (dead letters) — else of its Kafka record timestamp. Both are part of the
record as it sits in Kafka, so every replay puts it in the same bucket, and a reader that asks
for a time range reads only the buckets of that range and keeps the lines inside it. (Wall
clock time would put a replayed record into another bucket than its first copy, and a record
could not be found by its time.) pandas/pyarrow, DuckDB (`hive_partitioning`) and Spark read
`date` and `hour` as columns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HOUR_MS = 3_600_000
# The event time of each kind of record, the one that places it in its bucket.
TIME_FIELD = {
    "engine_execution": "timestamp",
    "comparison_result": "timestamp",
    "training_sample": "created_at",
    "aggregated_stats": "window_start",
    "dead_letter": "received_at",
    "alerts": "window_start",
}
TIME_FIELDS = tuple(dict.fromkeys(TIME_FIELD.values()))
# The last millisecond of the year 9999: the schemas' bound of every time, the last one a
# bucket (and Python's datetime) can name. Microseconds or nanoseconds since the epoch are
# beyond it, and dead-lettered (reason timestamp_range) rather than placed.
MAX_TIME_MS = 253_402_300_799_999


def event_time(record: dict[str, Any]) -> int | None:
    """The record's own time in epoch ms, if it has one."""
    for name in TIME_FIELDS:
        value = record.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return None


def bucket_of(ms: int) -> str:
    """`date=2026-12-01/hour=08` of an epoch-ms time (UTC)."""
    moment = datetime.fromtimestamp(max(ms, 0) / 1000, UTC)
    return f"date={moment:%Y-%m-%d}/hour={moment:%H}"


def bucket_start(bucket: str) -> int:
    """Epoch ms at which a bucket's hour begins."""
    date, hour = (part.split("=", 1)[1] for part in bucket.split("/"))
    moment = datetime.strptime(f"{date} {hour}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def buckets(directory: Path) -> Iterator[tuple[str, Path]]:
    """Every bucket of a channel directory (unordered), as (name, path)."""
    with contextlib.suppress(FileNotFoundError):
        for day in os.scandir(directory):
            if day.name.startswith("date=") and day.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    for hour in os.scandir(day.path):
                        if hour.name.startswith("hour=") and hour.is_dir():
                            yield f"{day.name}/{hour.name}", Path(hour.path)


def buckets_between(directory: Path, since: int | None, until: int | None) -> list[Path]:
    """The buckets that can hold times in [since, until): the only ones a reader opens.
    Without bounds every bucket; days outside the range are not even listed."""
    if since is None and until is None:
        return [path for _name, path in buckets(directory)]
    first = bucket_of(since) if since is not None else None
    last = bucket_of(until - 1) if until is not None else None
    found = []
    with contextlib.suppress(FileNotFoundError):
        for day in os.scandir(directory):
            if not day.name.startswith("date="):
                continue
            if first is not None and day.name < first.split("/")[0]:
                continue
            if last is not None and day.name > last.split("/")[0]:
                continue
            with contextlib.suppress(FileNotFoundError):
                for hour in os.scandir(day.path):
                    name = f"{day.name}/{hour.name}"
                    if (first is None or name >= first) and (last is None or name <= last):
                        found.append(Path(hour.path))
    return found


def parse_time(text: str) -> int:
    """Epoch milliseconds, or an ISO-8601 time (UTC unless it says otherwise)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not epoch milliseconds nor an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
