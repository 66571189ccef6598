"""A channel's sink: validated batches of one topic become lines in part files.

The sink writes and fsyncs (the fsync in the checkpoint's commit thread); it does not decide
what is done. A line counts once the checkpoint that names its file and size is committed
with the consumer offsets in one Kafka transaction (streams/worker/checkpoint.py); until then
it sits in the writer's own hidden file. A new owner of a partition rolls forward exactly
what the committed checkpoint names (sinks/files/part_files.py), so a replay never writes a
line twice and a zombie's writes never become visible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sinks.files.buckets import HOUR_MS, bucket_of, bucket_start
from sinks.files.part_files import Checkpoint, PartitionWriter, bucket_files
from sinks.reader import part_lines
from sinks.s3.location import S3Location
from streams.config import ChannelConfig
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.route import Parsed, record_time
from streams.validation import ValidationError

log = logging.getLogger(__name__)


class SinkWriteError(Exception):
    """A part file could not be written (full disk, unwritable directory): stop committing."""


class SinkUnavailable(SinkWriteError):
    """The output cannot be reached for now (an S3 server down or failing): nothing past the
    last checkpoint counts; roll back and try again later."""


def write_error(message: str, exc: BaseException) -> SinkWriteError:
    """SinkUnavailable for a failure that a retry later may get past, else SinkWriteError."""
    transient = getattr(exc, "transient", False)
    return (SinkUnavailable if transient else SinkWriteError)(f"{message}: {exc}")


@dataclass
class _Pending:
    """Lines of one partition and bucket waiting for the next flush, and their offsets."""

    lines: list[bytes] = field(default_factory=list)
    first: int = -1
    last: int = -1


@dataclass
class SinkCounters:
    received: int = 0
    valid: int = 0
    invalid: int = 0
    written: int = 0
    duplicates_dropped: int = 0
    batches: int = 0
    bytes: int = 0


# The event time that places a channel's record in its bucket (sinks/files/buckets.py).
TIME_FIELD = {
    "engine_execution": "timestamp",
    "comparison_result": "timestamp",
    "training_sample": "created_at",
    "aggregated_stats": "window_start",
    "dead_letter": "received_at",
}
# Open files per partition between two checkpoints (each is named in the committed offset's
# metadata, which the broker caps at 4 KiB by default): a batch that would open more is
# taken in parts, with a checkpoint between them.
MAX_OPEN_FILES = 24


class ChannelSink:
    """Sink of one channel's topic into `<base_path>/<channel dir>/`, one writer per partition."""

    def __init__(
        self,
        channel: str,
        topic: str,
        config: ChannelConfig,
        base_path: Path | S3Location,
        dead_letters: DeadLetterPolicy,
        dedupe_key: Callable[[dict[str, Any]], str] | None = None,
        dedupe_horizon_hours: float = 168,
    ):
        self.channel = channel
        self.topic = topic
        self.config = config
        self.directory = base_path / config.directory
        self.dead_letters = dead_letters
        self.counters = SinkCounters()
        self.flush_durations: list[float] = []  # drained into the metrics by the worker
        self.time_field = TIME_FIELD.get(channel, "timestamp")
        self._writers: dict[int, PartitionWriter] = {}
        self._unsynced: dict[int, PartitionWriter] = {}  # written by flush(), for sync()
        self._flush_started = 0.0
        self._pending: dict[int, dict[str, _Pending]] = {}
        self._waiting = 0
        self._first_at: float | None = None
        self._bucket_names: dict[int, str] = {}
        self.dedupe_key = dedupe_key
        self.dedupe_horizon_ms = int(dedupe_horizon_hours * HOUR_MS)
        self._seen: dict[tuple[int, str], set[str]] = {}

    # -- partitions --------------------------------------------------------------------------

    def assign(self, partition: int, epoch: int, checkpoints: list[Checkpoint]) -> None:
        """The partition is ours in `epoch`: roll forward its committed files, drop older ones."""
        writer = self._writer(partition, epoch)
        try:
            writer.recover(checkpoints)
        except OSError as exc:
            writer.abandon()
            raise write_error(
                f"{self.channel}: cannot recover part files of partition {partition} in "
                f"{self.directory} (do all workers share output.base_path?)",
                exc,
            ) from exc
        self._writers[partition] = writer
        log.info("%s: partition %d recovered (owner epoch %d)", self.channel, partition, epoch)

    def _writer(self, partition: int, epoch: int) -> PartitionWriter:
        roll_bytes, roll_seconds = self.config.roll_bytes, self.config.roll_seconds
        if isinstance(self.directory, S3Location):
            from sinks.s3.part_objects import S3PartitionWriter

            return S3PartitionWriter(self.directory, partition, epoch, roll_bytes, roll_seconds)
        return PartitionWriter(self.directory, partition, epoch, roll_bytes, roll_seconds)

    def legacy_recover(self, partition: int) -> int | None:
        """Finish part files of the layout before fenced checkpoints (an upgrade); return the
        next offset they prove, if they hold any of the partition."""
        if isinstance(self.directory, S3Location):
            return None  # S3 output began with fenced checkpoints
        writer = PartitionWriter(self.directory, partition, 0, 0, 0)
        try:
            return writer.recover_legacy()
        except OSError as exc:
            raise SinkWriteError(f"{self.channel}: cannot finish older part files: {exc}") from exc

    def release(self, partitions: Iterable[int]) -> None:
        """After the last checkpoint of partitions that move: finish their files, forget them."""
        for partition in partitions:
            writer = self._writers.pop(partition, None)
            if writer is not None:
                try:
                    writer.finish()
                except (OSError, RuntimeError) as exc:  # the next owner rolls it forward
                    log.warning("%s: partition %d not finished: %s", self.channel, partition, exc)
                    writer.abandon()
            self._forget(partition)

    def lose(self, partitions: Iterable[int]) -> None:
        """Partitions taken away without a checkpoint: keep nothing, publish nothing."""
        for partition in partitions:
            writer = self._writers.pop(partition, None)
            if writer is not None:
                writer.abandon()
            self._forget(partition)

    def _forget(self, partition: int) -> None:
        pending = self._pending.pop(partition, None)
        if pending is not None:
            self._waiting -= sum(len(p.lines) for p in pending.values())
        for key in [k for k in self._seen if k[0] == partition]:
            del self._seen[key]
        if not self._pending:
            self._waiting, self._first_at = 0, None

    @property
    def partitions(self) -> list[int]:
        return list(self._writers)

    # -- input -------------------------------------------------------------------------------

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> int:
        """Take a fetched batch of a partition, or only its first records if the rest would
        open more than MAX_OPEN_FILES files before the next checkpoint; return how many."""
        writer = self._writers.get(partition)
        if writer is None:
            return len(items)  # not assigned here (a record fetched before a revocation)
        pending = self._pending.setdefault(partition, {})
        open_buckets = writer.open_buckets | set(pending)
        validate = self.config.validate_
        time_field = self.time_field
        dedupe = self.dedupe_key is not None
        # Counted once at the end (attribute writes per record cost): the rare cases here.
        taken, invalid, tombstones, duplicates = len(items), 0, 0, 0
        for n, (record, parsed, error) in enumerate(items):
            offset = record.offset()
            value = record.value()
            if validate and error is not None:
                invalid += 1
                self._reject(partition, offset, error, value)
                continue
            if value is None:
                tombstones += 1
                continue  # a tombstone, with validation off: nothing to write
            ts = parsed.get(time_field) if parsed is not None else None
            ms = ts if isinstance(ts, int) else record_time(record) or 0
            bucket = self._bucket(ms)
            if bucket not in open_buckets:
                if len(open_buckets) >= MAX_OPEN_FILES:
                    taken = n
                    break
                open_buckets.add(bucket)
            if dedupe and self._seen_before(partition, bucket, value, parsed):
                duplicates += 1
                continue
            lines = pending.get(bucket)
            if lines is None:
                lines = pending[bucket] = _Pending(first=offset)
            lines.last = offset
            lines.lines.append(value)
        counters = self.counters
        counters.received += taken
        counters.invalid += invalid
        counters.valid += taken - invalid - tombstones
        counters.duplicates_dropped += duplicates
        self._waiting += taken - tombstones
        if self._waiting and self._first_at is None:
            self._first_at = time.monotonic()
        return taken

    def _bucket(self, ms: int) -> str:
        hour = ms // HOUR_MS
        name = self._bucket_names.get(hour)
        if name is None:
            name = self._bucket_names[hour] = bucket_of(hour * HOUR_MS)
        return name

    def _seen_before(
        self, partition: int, bucket: str, value: bytes, parsed: dict[str, Any] | None
    ) -> bool:
        """Idempotence by record id (sample_id…) within the horizon: a copy falls in the bucket
        of the first (its event time is the same), whose ids are loaded when first needed."""
        assert self.dedupe_key is not None
        try:
            key = self.dedupe_key(parsed if parsed is not None else orjson.loads(value))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False
        if bucket_start(bucket) + HOUR_MS <= time.time() * 1000 - self.dedupe_horizon_ms:
            return False  # beyond the horizon: no state is kept for it
        seen = self._seen.get((partition, bucket))
        if seen is None:
            seen = self._seen[(partition, bucket)] = self._load_seen(partition, bucket)
        if key in seen:
            return True
        seen.add(key)
        return False

    def _load_seen(self, partition: int, bucket: str) -> set[str]:
        """The ids one bucket's files of this partition already hold."""
        assert self.dedupe_key is not None
        seen: set[str] = set()
        try:
            parts = [p for p in bucket_files(self.directory, bucket) if p.partition == partition]
            for part in parts:
                for line in part_lines(part):
                    try:
                        seen.add(self.dedupe_key(orjson.loads(line)))
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
        except OSError as exc:
            raise write_error(f"{self.channel}: reading the ids of {bucket}", exc) from exc
        return seen

    def _forget_old_ids(self) -> None:
        cutoff = time.time() * 1000 - self.dedupe_horizon_ms
        for key in [k for k in self._seen if bucket_start(k[1]) + HOUR_MS <= cutoff]:
            del self._seen[key]

    def _reject(self, partition: int, offset: int, exc: ValidationError, value: Any) -> None:
        if self.channel == "dead_letter":  # never dead-letter a dead letter: no loops
            log.error("invalid dead letter at %s[%d]@%d: %s", self.topic, partition, offset, exc)
            return
        self.dead_letters.reject(self.channel, self.topic, partition, offset, exc, value)

    # -- output ------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return self._waiting

    def due(self, now: float) -> bool:
        """A checkpoint is due: `buffer_size` records wait, or the oldest for too long."""
        return self._waiting >= self.config.buffer_size or (
            self._first_at is not None and now - self._first_at >= self.config.auto_flush_seconds
        )

    def flush(self) -> None:
        """Write every waiting line; `sync()` makes them durable, and the commit after decides
        what counts."""
        if not self._waiting:
            return
        self._flush_started = time.perf_counter()
        for writer in self._writers.values():
            try:
                writer.collect()
            except OSError as exc:
                raise write_error(f"{self.channel}: publishing a finished file", exc) from exc
        for partition, by_bucket in self._pending.items():
            for bucket, pending in by_bucket.items():
                self._write(partition, bucket, pending)
        self._unsynced = dict(self._writers)
        self._pending.clear()
        self.counters.batches += 1
        self._waiting = 0
        self._first_at = None

    def sync(self) -> None:
        """Make what `flush()` wrote durable: fsync (S3: the uploads of the parts, in
        parallel). Runs in the commit thread, while the batch thread reads the next records
        and leaves these writers' files alone (streams/worker/checkpoint.py)."""
        unsynced, self._unsynced = self._unsynced, {}
        if not unsynced:
            return
        for partition, writer in unsynced.items():
            try:
                writer.sync()
            except OSError as exc:
                raise write_error(
                    f"{self.channel}: writing partition {partition} to {self.directory} "
                    "failed; nothing after the last checkpoint counts",
                    exc,
                ) from exc
        self.flush_durations.append(time.perf_counter() - self._flush_started)

    def _write(self, partition: int, bucket: str, pending: _Pending) -> None:
        data = _jsonl(pending.lines)
        try:
            self._writers[partition].append(data, pending.first, pending.last, bucket)
        except OSError as exc:
            raise write_error(
                f"{self.channel}: writing {len(data)} bytes for partition {partition} to "
                f"{self.directory} failed; nothing after the last checkpoint counts",
                exc,
            ) from exc
        self.counters.written += len(pending.lines)
        self.counters.bytes += len(data)

    def checkpoints(self) -> dict[int, list[Checkpoint]]:
        """partition → its open files as the next commit records them."""
        return {p: w.checkpoints() for p, w in self._writers.items()}

    def committed(self) -> None:
        """The checkpoint was committed: files may finish now."""
        try:
            for writer in self._writers.values():
                writer.committed()
        except OSError as exc:  # the next recovery publishes what is committed
            raise write_error(f"{self.channel}: publishing a finished file", exc) from exc
        self._forget_old_ids()

    def roll_due(self, now: float) -> None:
        try:
            for writer in self._writers.values():
                writer.roll_due(now)
        except OSError as exc:
            raise write_error(f"{self.channel}: publishing a finished file", exc) from exc


def _jsonl(values: list[bytes]) -> bytes:
    """One line per value, as published; a raw line break inside a value (only whitespace in
    JSON) becomes a space, so it cannot split a line. Checked once per batch, not per value:
    `in` is a memchr, where counting or `data + b"\n"` would pass over the batch again."""
    if not values:
        return b""
    joined = b"".join(values)
    if b"\n" not in joined and b"\r" not in joined:
        return b"\n".join([*values, b""])  # b"": the last line's break
    return b"".join(v.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n" for v in values)
