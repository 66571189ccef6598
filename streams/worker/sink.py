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
import resource
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinks.files.buckets import HOUR_MS, MAX_TIME_MS, TIME_FIELD, bucket_of
from sinks.files.manifest import INLINE_FILES
from sinks.files.names import Checkpoint
from sinks.files.part_files import PartitionWriter
from sinks.formats.compression import compressor, suffix
from sinks.s3.location import S3Location
from streams.config import ChannelConfig
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.dedupe import DUPLICATE, Skipped
from streams.readers.failures import Fatal, SinkWriteError, write_error
from streams.readers.route import Parsed, internal_error, record_time
from streams.validation import TIMESTAMP_RANGE, ValidationError
from streams.worker.faults import fault_point

log = logging.getLogger(__name__)


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


# Open files per partition (one per hour bucket written since the last checkpoint or so:
# a backfill spans hundreds). Each holds a descriptor, so the worker raises its limit at
# start-up and `open_files_cap` sizes this to it; a batch that would open more is taken in
# parts, with a checkpoint between them. Past 24 a checkpoint names them through a
# manifest (sinks/files/manifest.py).
MAX_OPEN_FILES = 1000
DESCRIPTORS_KEPT = 512  # for everything else of the process: sockets, logs, libraries
BUCKET_NAMES_CACHED = 4096  # hours whose bucket name is kept (a backfill spans thousands)
# S3: files still being published count as open (they are in the metadata until they are
# done). When they alone hold the limit, the batch thread waits this long for one of them.
PUBLICATION_WAIT_SECONDS = 1.0


class ChannelSink:
    """Sink of one channel's topic into `<base_path>/<channel dir>/`, one writer per partition."""

    def __init__(
        self,
        channel: str,
        topic: str,
        config: ChannelConfig,
        base_path: Path | S3Location,
        dead_letters: DeadLetterPolicy,
        retention_days: float | None = None,
        max_open_files: int = MAX_OPEN_FILES,
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
        # Since when the committed metadata names files published after it: the next
        # checkpoint drops them (so that retention may take them), even with nothing waiting.
        self._stale_at: float | None = None
        self._bucket_names: dict[int, str] = {}
        self.retention_days = retention_days  # a recovery tolerates what retention deleted
        self.max_open_files = max_open_files  # per partition
        # Each append one gzip member or zstd frame (sinks/formats/compression.py).
        self._compress = compressor(config.compression, config.compression_level)
        self._suffix = suffix(config.compression)

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
        roll = (self.config.roll_bytes, self.config.roll_seconds, self.retention_days)
        if isinstance(self.directory, S3Location):
            from sinks.s3.part_objects import S3PartitionWriter

            return S3PartitionWriter(self.directory, partition, epoch, *roll, self._suffix)
        return PartitionWriter(self.directory, partition, epoch, *roll, self._suffix)

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
        if not self._pending:
            self._waiting, self._first_at = 0, None

    @property
    def partitions(self) -> list[int]:
        return list(self._writers)

    def busy_buckets(self, partition: int) -> set[str]:
        """Buckets of the partition with lines not in finished files yet (waiting, written
        to an open file, or being published)."""
        writer = self._writers.get(partition)
        open_buckets = writer.open_buckets if writer is not None else set()
        return open_buckets | set(self._pending.get(partition, ()))

    # -- input -------------------------------------------------------------------------------

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> int:
        """Take a fetched batch of a partition, or only its first records if the rest would
        open more than `max_open_files` files before the next checkpoint; return how many."""
        writer = self._writers.get(partition)
        if writer is None:
            return len(items)  # not assigned here (a record fetched before a revocation)
        pending = self._pending.setdefault(partition, {})
        open_buckets = writer.open_buckets | set(pending)
        max_open = self.max_open_files
        validate = self.config.validate_
        time_field = self.time_field
        # Counted once at the end (attribute writes per record cost): the rare cases here.
        taken, invalid, tombstones, skipped, duplicates = len(items), 0, 0, 0, 0
        for n, (record, parsed, error) in enumerate(items):
            offset = record.offset()
            value = record.value()
            if error is not None:
                if type(error) is Skipped:  # a copy, or forwarded to its home partition
                    skipped += 1
                    duplicates += error.reason == DUPLICATE
                    continue
                if validate:
                    invalid += 1
                    self._reject(partition, offset, error, value)
                    continue
            if value is None:
                tombstones += 1
                continue  # a tombstone, with validation off: nothing to write
            try:
                # Validated records carry an int time in range (streams/readers/route.py);
                # with validation off anything may come.
                ms = parsed.get(time_field) if parsed is not None else None
                if type(ms) is not int:
                    ms = record_time(record) or 0
                if not 0 <= ms <= MAX_TIME_MS:
                    invalid += 1
                    self._reject(partition, offset, _unplaceable(ms), value)
                    continue
                bucket = self._bucket(ms)
                if bucket not in open_buckets:
                    if len(open_buckets) >= max_open:
                        if not pending:  # no checkpoint can make room, a publication will (S3)
                            writer.await_publication(PUBLICATION_WAIT_SECONDS)
                        taken = n
                        break
                    open_buckets.add(bucket)
            except Fatal:
                raise
            except Exception as exc:  # one record fails, never the worker
                invalid += 1
                self._reject(partition, offset, internal_error(exc, f"sink {self.channel}"), value)
                continue
            lines = pending.get(bucket)
            if lines is None:
                lines = pending[bucket] = _Pending(first=offset)
            lines.last = offset
            lines.lines.append(value)
        counters = self.counters
        counters.received += taken
        counters.invalid += invalid
        counters.valid += taken - invalid - tombstones - skipped
        counters.duplicates_dropped += duplicates
        self._waiting += taken - tombstones - skipped
        if self._waiting and self._first_at is None:
            self._first_at = time.monotonic()
        return taken

    def _bucket(self, ms: int) -> str:
        hour = ms // HOUR_MS
        names = self._bucket_names
        name = names.get(hour)
        if name is None:
            if len(names) >= BUCKET_NAMES_CACHED:
                names.clear()
            name = names[hour] = bucket_of(hour * HOUR_MS)
        return name

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
        """A checkpoint is due: `buffer_size` records wait, or the oldest for too long, or
        the committed metadata has named published files for as long."""
        wait = self.config.auto_flush_seconds
        return (
            self._waiting >= self.config.buffer_size
            or (self._first_at is not None and now - self._first_at >= wait)
            or (self._stale_at is not None and now - self._stale_at >= wait)
        )

    def flush(self) -> None:
        """Write every waiting line; `sync()` makes them durable, and the commit after decides
        what counts."""
        self._collect()  # also with nothing waiting: publications done make room (a backfill)
        if not self._waiting:
            return
        self._flush_started = time.perf_counter()
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
        if self._compress is not None:  # whole members or frames only: any size is an end
            data = self._compress(data)
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
        self._stale_at = None
        return {p: w.checkpoints() for p, w in self._writers.items()}

    def committed(self) -> None:
        """The checkpoint was committed: files may finish now."""
        published = self._published()
        try:
            for writer in self._writers.values():
                writer.committed()
        except OSError as exc:  # the next recovery publishes what is committed
            raise write_error(f"{self.channel}: publishing a finished file", exc) from exc
        self._after_publish(published)

    def roll_due(self, now: float) -> None:
        """Finish files open for `roll_seconds`; take in publications done meanwhile."""
        published = self._published()
        try:
            for writer in self._writers.values():
                writer.roll_due(now)
                writer.collect()
        except OSError as exc:
            raise write_error(f"{self.channel}: publishing a finished file", exc) from exc
        self._after_publish(published)

    def _collect(self) -> None:
        """Take in the publications done in the background (S3); raise the first failure."""
        published = self._published()
        for writer in self._writers.values():
            try:
                writer.collect()
            except OSError as exc:
                raise write_error(f"{self.channel}: publishing a finished file", exc) from exc
        self._after_publish(published)

    def _published(self) -> int:
        return sum(writer.published for writer in self._writers.values())

    def _after_publish(self, before: int) -> None:
        """Files became visible, and the committed metadata names them until the next commit:
        the tests' fault point `after_publish` (streams/worker/faults.py)."""
        if self._published() > before:
            if self._stale_at is None:
                self._stale_at = time.monotonic()
            fault_point("after_publish")


def _unplaceable(ms: int) -> ValidationError:
    return ValidationError(
        TIMESTAMP_RANGE, f"time {ms} is not epoch milliseconds between 1970 and the year 9999"
    )


def open_files_cap(partitions: int) -> int:
    """Open files per partition this process can hold for `partitions` partitions of all
    its sinks: MAX_OPEN_FILES, fewer under a low descriptor limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_FILES
    return max(INLINE_FILES, min(MAX_OPEN_FILES, (soft - DESCRIPTORS_KEPT) // max(partitions, 1)))


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
