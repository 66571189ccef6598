"""Copies of a record that has an id count once, by the data alone.

Training samples (`sample_id`), aggregated stats (`engine_id` and `window_start`), alerts
(`alert_id`: engine and window; home by `engine_id`),
comparisons (`comparison_id`) and executions derived from OpenTelemetry spans (`trace_id` and
`task_id`: the span's identity; only executions with `otel` are checked) carry an identity; a
copy (a producer's retry, a republish, a
deriver's sample published again by hand) must not count twice, whenever it is read:

1. **One place.** A training sample or an aggregated stat has a home partition: murmur2 of
   its key (`sample_id`, `engine_id`) modulo the partitions, which is where json-engine's
   producers and Kafka's Java clients put it. One read anywhere else (another partitioner,
   no key) is *forwarded* home: republished there with its key and its own timestamp, in
   the checkpoint transaction that commits its offset, and no reader sees it where it was.
   So copies meet whatever partitioner made them. Comparisons are not forwarded: the
   aggregates count them where they are read, by that partition's stream time, which must
   not depend on the producer's partitioner (a forwarded comparison would arrive late);
   copies of a comparison meet only when they land in the same partition (a producer's
   retry, with the same key and client, does).
2. **One order.** In a partition, in offset order, a record whose id an earlier record had
   is a duplicate: no reader sees it (no line, no count in the aggregates, no training
   sample).
3. **Stream time, not wall time.** Ids are checked within `output.dedupe_horizon_hours` of
   the home partition's stream time (the largest event time read there), which is
   committed with its offset: a backfill of last year is as idempotent as live traffic,
   and the verdict is the same on every replay. A copy whose hour ended more than the
   horizon before the stream time is not checked, and counts again.
4. **Bounded memory.** The ids of one hour are read from the channel's finished files of
   the partition when first needed (a copy carries its first's event time, so it falls in
   the same hour). Past `output.dedupe_max_ids` ids per worker, the hours used longest ago
   are forgotten (never one whose lines are not in finished files yet) and read again
   when a record of theirs comes.

The verdicts are undone for the records a reader did not take (the sink takes a prefix of
a batch when it would open too many files): they are read again after a checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka.partitioner import murmur2

from sinks.files.buckets import HOUR_MS, TIME_FIELD, bucket_of, bucket_start
from sinks.reader import bucket_files, part_lines
from sinks.s3.location import S3Location
from streams.readers.failures import write_error
from streams.readers.outbox import Outgoing
from streams.validation import ValidationError

log = logging.getLogger(__name__)
DUPLICATE: Final = "duplicate"
FORWARDED: Final = "forwarded"

# kind → (its id, its key: what places it in its home partition; None: not forwarded)
IDENTITIES: Final[dict[str, tuple[Callable[[dict], str], Callable[[dict], str] | None]]] = {
    # executions derived from OpenTelemetry spans (the `otel` ones only): the span's identity;
    # json-engine keys them by it, so the copies of a span land in one partition
    "engine_execution": (lambda r: f"{r['trace_id']}/{r['task_id']}", None),
    "comparison_result": (lambda r: r["comparison_id"], None),
    "training_sample": (lambda r: r["sample_id"], lambda r: r["sample_id"]),
    "aggregated_stats": (
        lambda r: f"{r['engine_id']}|{r['window_start']}",
        lambda r: r["engine_id"],
    ),
    "alerts": (lambda r: r["alert_id"], lambda r: r["engine_id"]),
}

MARKERS: Final = {"engine_execution": "otel"}


class Skipped(ValidationError):
    """Not an error: a record no reader takes where it was read (a copy, or forwarded)."""


def home_partition(key: bytes, partitions: int) -> int:
    """Where murmur2 puts a key: json-engine's producers (librdkafka's murmur2_random) and
    Kafka's Java clients alike."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class RecordIds:
    """The identity checks of one topic: home partitions, stream times, ids seen."""

    def __init__(
        self,
        kind: str,
        topic: str,
        partitions: int,
        directory: Path | S3Location,
        horizon_hours: float,
        max_ids: int,
        busy_buckets: Callable[[int], set[str]],
        flush_seconds: float = 1.0,
    ):
        self.topic = topic
        self.partitions = partitions
        self.directory = directory
        self.identity, self.key = IDENTITIES[kind]
        # Only records with this field have an identity (executions: those from spans).
        self.marker: str | None = MARKERS.get(kind)
        self._marker_bytes = None if self.marker is None else f'"{self.marker}"'.encode()
        self.time_field = TIME_FIELD[kind]
        self.horizon_ms = round(horizon_hours * HOUR_MS)
        self.max_ids = max_ids
        self.busy_buckets = busy_buckets  # of a partition: lines not in finished files yet
        self.flush_seconds = flush_seconds
        self._skipped_at: float | None = None  # records skipped since the last checkpoint
        self.stream_times: dict[int, int | None] = {}
        self.duplicates = 0
        self.forwarded = 0
        self._seen: OrderedDict[tuple[int, str], set[str]] = OrderedDict()  # oldest use first
        self._ids = 0
        self._forwards: list[Outgoing] = []
        # This batch's verdicts, to undo those of the records not taken.
        self._added: list[tuple[int, tuple[int, str], str]] = []
        self._times: list[tuple[int, int | None]] = []  # (index, stream time before it)
        self._duplicates: list[int] = []
        self._batch_forwards: list[tuple[int, Outgoing]] = []

    # -- partitions --------------------------------------------------------------------------

    def assign(self, partition: int, stream_time: int | None) -> None:
        """Taken over at the committed stream time; ids are read from files when needed."""
        self.release(partition)
        self.stream_times[partition] = stream_time

    def release(self, partition: int) -> None:
        self.stream_times.pop(partition, None)
        for key in [k for k in self._seen if k[0] == partition]:
            self._ids -= len(self._seen.pop(key))

    # -- a batch -----------------------------------------------------------------------------

    def begin(self) -> None:
        self._added.clear()
        self._times.clear()
        self._duplicates.clear()
        self._batch_forwards.clear()

    def check(self, partition: int, index: int, record: Any, parsed: dict) -> Skipped | None:
        """The verdict on one valid record (its time placed at the edge): None to read it
        here, else why not."""
        if self.key is not None:
            key = self.key(parsed).encode()
            home = home_partition(key, self.partitions)
            if home != partition:
                _kind, ts = record.timestamp()
                forward = (self.topic, key, record.value(), home, ts if _kind else None)
                self._batch_forwards.append((index, forward))
                self.forwarded += 1
                return Skipped(FORWARDED, f"forwarded to its home partition {home}")
        ts = parsed[self.time_field]
        stream_time = self.stream_times.get(partition)
        self._times.append((index, stream_time))
        if stream_time is None or ts > stream_time:
            self.stream_times[partition] = ts
        hour = ts - ts % HOUR_MS
        if stream_time is not None and hour + HOUR_MS <= stream_time - self.horizon_ms:
            return None  # beyond the horizon: not checked
        bucket = bucket_of(hour)
        seen = self._ids_of(partition, bucket)
        record_id = self.identity(parsed)
        if record_id in seen:
            self.duplicates += 1
            self._duplicates.append(index)
            return Skipped(DUPLICATE, f"a copy of {record_id!r}, read before in this partition")
        seen.add(record_id)
        self._ids += 1
        self._added.append((index, (partition, bucket), record_id))
        return None

    def end(self, partition: int, taken: int) -> None:
        """The readers took the first `taken` records checked since begin(): the verdicts on
        the others are undone (they are read again after a checkpoint)."""
        for index, forward in self._batch_forwards:
            if index < taken:
                self._forwards.append(forward)
            else:
                self.forwarded -= 1
        if self._skipped_at is None and (self._forwards or self._duplicates):
            self._skipped_at = time.monotonic()
        untaken = [before for index, before in self._times if index >= taken]
        if untaken:
            self.stream_times[partition] = untaken[0]
            for index, key, record_id in self._added:
                if index >= taken and key in self._seen:
                    self._seen[key].discard(record_id)
                    self._ids -= 1
            self.duplicates -= sum(1 for index in self._duplicates if index >= taken)
        self._forget_old(partition)

    # -- the ids of one hour -----------------------------------------------------------------

    def _ids_of(self, partition: int, bucket: str) -> set[str]:
        key = (partition, bucket)
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            return seen
        seen: set[str] = set()
        marker = self._marker_bytes
        try:
            for part in bucket_files(self.directory, bucket):
                if part.partition != partition:
                    continue
                for line in part_lines(part):
                    if marker is not None and marker not in line:
                        continue  # cheaper than parsing: most executions are not from spans
                    try:
                        seen.add(self.identity(orjson.loads(line)))
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue  # written with validation off: no id to compare
        except OSError as exc:  # the output, not the record: roll back and retry, or stop
            raise write_error(f"reading the ids of {self.directory}/{bucket}", exc) from exc
        self._seen[key] = seen
        self._ids += len(seen)
        return seen

    def _forget_old(self, partition: int) -> None:
        """Hours past the horizon go; past max_ids, the least recently used idle ones too."""
        stream_time = self.stream_times.get(partition)
        if stream_time is not None:
            cutoff = stream_time - self.horizon_ms
            for key in [k for k in self._seen if k[0] == partition]:
                if bucket_start(key[1]) + HOUR_MS <= cutoff:
                    self._ids -= len(self._seen.pop(key))
        if self._ids <= self.max_ids:
            return
        busy: dict[int, set[str]] = {}
        for key in list(self._seen):
            if self._ids <= self.max_ids:
                break
            part, bucket = key
            if part not in busy:
                busy[part] = self.busy_buckets(part)
            if bucket not in busy[part]:
                self._ids -= len(self._seen.pop(key))

    # -- the checkpoint ----------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """A checkpoint is due for records skipped here: forwards wait to go home, and the
        offsets of copies to be committed (no sink counts them), as the sink's lines do."""
        return self._skipped_at is not None and now - self._skipped_at >= self.flush_seconds

    def drain(self) -> Iterator[Outgoing]:
        forwards, self._forwards = self._forwards, []
        self._skipped_at = None
        yield from forwards

    def reset(self) -> None:
        """A rolled-back checkpoint: every partition is taken over again."""
        self._forwards.clear()
        self._skipped_at = None
        self._seen.clear()
        self._ids = 0
        self.stream_times.clear()
