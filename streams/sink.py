"""A channel's sink: validates batches of records and makes them durable lines, exactly once.

This is the one place that decides what is done. A record counts as done only when its line
is fsynced inside a checkpointed part file (or its dead letter is acknowledged by the broker),
and the next offset to read is what the files prove (`PartitionWriter.recover`), not what
Kafka has committed: Kafka commits are only a hint that saves re-reading. Records below the
proven offset are dropped, so a replay after SIGKILL or a rebalance writes nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sinks.part_files import PartitionWriter, finished_files
from streams.config import ChannelConfig
from streams.dead_letter import DeadLetterPolicy
from streams.route import Parsed
from streams.validation import ValidationError

log = logging.getLogger(__name__)


class SinkWriteError(Exception):
    """A part file could not be written (full disk, unwritable directory): stop committing."""


@dataclass
class _Pending:
    """Lines of one partition waiting for the next flush, and the offsets they cover."""

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


class ChannelSink:
    """Sink of one channel's topic into `<base_path>/<channel dir>/`, one writer per partition."""

    def __init__(
        self,
        channel: str,
        topic: str,
        config: ChannelConfig,
        base_path: Path,
        dead_letters: DeadLetterPolicy,
        owns: Callable[[int], bool] = lambda _p: True,
        dedupe_key: Callable[[dict[str, Any]], str] | None = None,
    ):
        self.channel = channel
        self.topic = topic
        self.config = config
        self.directory = base_path / config.directory
        self.dead_letters = dead_letters
        self.owns = owns
        self.counters = SinkCounters()
        self.flush_durations: list[float] = []  # drained into the metrics by the worker
        self._writers: dict[int, PartitionWriter] = {}
        self._next: dict[int, int | None] = {}
        self._pending: dict[int, _Pending] = {}
        self._waiting = 0
        self._first_at: float | None = None
        self.dedupe_key = dedupe_key
        self._seen: dict[int, set[str]] = {}
        self.closed = False

    # -- input -------------------------------------------------------------------------------

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None:
        """Take one fetched batch of a partition; flush when `buffer_size` records wait."""
        if self.closed or not self.owns(partition):
            return  # not ours (any more): the owner reads them from its proven offset
        if partition not in self._writers:
            self._recover(partition)
        start = self._next[partition]
        pending = self._pending.setdefault(partition, _Pending())
        validate = self.config.validate_
        counters = self.counters
        for record, parsed, error in items:
            offset = record.offset
            if start is not None and offset < start:
                counters.duplicates_dropped += 1
                continue
            counters.received += 1
            if pending.first < 0:
                pending.first = offset
            pending.last = offset
            self._waiting += 1
            value = record.value
            if validate and error is not None:
                counters.invalid += 1
                self._reject(partition, offset, error, value)
                continue
            if value is None:
                continue  # a tombstone, with validation off: nothing to write
            counters.valid += 1
            if self.dedupe_key is not None and self._seen_before(partition, value, parsed):
                counters.duplicates_dropped += 1
                continue
            pending.lines.append(value)
        if self._waiting and self._first_at is None:
            self._first_at = time.monotonic()
        if self._waiting >= self.config.buffer_size:
            self.flush()

    def _seen_before(self, partition: int, value: bytes, parsed: dict[str, Any] | None) -> bool:
        """Idempotence by record id (sample_id…): a second copy is covered but not written."""
        assert self.dedupe_key is not None
        try:
            key = self.dedupe_key(parsed if parsed is not None else orjson.loads(value))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False
        seen = self._seen.setdefault(partition, set())
        if key in seen:
            return True
        seen.add(key)
        return False

    def _load_seen(self, partition: int) -> None:
        """The ids this partition's files already hold (read once, when it is assigned)."""
        assert self.dedupe_key is not None
        seen: set[str] = set()
        for part in finished_files(self.directory):
            if part.partition == partition:
                with open(part.path, "rb") as f:
                    for line in f:
                        try:
                            seen.add(self.dedupe_key(orjson.loads(line)))
                        except (orjson.JSONDecodeError, KeyError, TypeError):
                            continue
        self._seen[partition] = seen

    def _reject(self, partition: int, offset: int, exc: ValidationError, value: Any) -> None:
        if self.channel == "dead_letter":  # never dead-letter a dead letter: no loops
            log.error("invalid dead letter at %s[%d]@%d: %s", self.topic, partition, offset, exc)
            return
        self.dead_letters.reject(self.channel, self.topic, partition, offset, exc, value)

    def _recover(self, partition: int) -> None:
        writer = PartitionWriter(
            self.directory, partition, self.config.roll_bytes, self.config.roll_seconds
        )
        try:
            self._next[partition] = writer.recover()
        except OSError as exc:
            raise SinkWriteError(
                f"{self.channel}: cannot recover part files of partition {partition} in "
                f"{self.directory}: {exc}"
            ) from exc
        self._writers[partition] = writer
        if self.dedupe_key is not None:
            self._load_seen(partition)
        log.info(
            "%s: partition %d resumes at offset %s (from files)",
            self.channel,
            partition,
            self._next[partition],
        )

    # -- output ------------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return self._first_at is not None and now - self._first_at >= self.config.auto_flush_seconds

    def flush(self) -> None:
        """Make every waiting record durable: dead letters acknowledged first, then lines."""
        if not self._waiting:
            return
        started = time.perf_counter()
        self.dead_letters.flush()
        for partition in list(self._pending):
            pending = self._pending[partition]
            if pending.first >= 0:
                self._write(partition, pending)
            del self._pending[partition]  # written: a retry after a later failure skips it
        self.counters.batches += 1
        self.flush_durations.append(time.perf_counter() - started)
        self._waiting = 0
        self._first_at = None

    def _write(self, partition: int, pending: _Pending) -> None:
        data = _jsonl(pending.lines)
        try:
            self._writers[partition].append(data, pending.first, pending.last)
        except OSError as exc:
            self._writers[partition].abandon()
            raise SinkWriteError(
                f"{self.channel}: writing {len(data)} bytes for partition {partition} to "
                f"{self.directory} failed: {exc}; nothing past offset "
                f"{(self._next[partition] or 0) - 1} is marked done"
            ) from exc
        self._next[partition] = pending.last + 1
        self.counters.written += len(pending.lines)
        self.counters.bytes += len(data)

    def roll_due(self, now: float) -> None:
        for writer in self._writers.values():
            if writer.due(now):
                writer.finish()

    def assign(self, partitions: Iterable[int]) -> None:
        """Partitions now ours: finish what a previous owner left, even if no record comes."""
        for partition in partitions:
            if partition not in self._writers:
                self._recover(partition)

    def release(self, partitions: Iterable[int]) -> None:
        """Before partitions move to another worker: flush, finish their files, forget them."""
        try:
            self.flush()
        finally:  # a failed partition's writer is abandoned; the others' files are whole
            for partition in partitions:
                writer = self._writers.pop(partition, None)
                if writer is not None:
                    writer.finish()
                self._next.pop(partition, None)
                self._seen.pop(partition, None)

    def close(self) -> None:
        """Graceful stop: everything waiting is written and every file finished."""
        if self.closed:
            return
        self.release(list(self._writers))
        self.closed = True

    @property
    def done(self) -> dict[int, int]:
        """partition → next offset to read, as the files prove it."""
        return {p: n for p, n in self._next.items() if n is not None}


def _jsonl(values: list[bytes]) -> bytes:
    """One line per value, as published; a raw line break inside a value (only whitespace in
    JSON) becomes a space, so it cannot split a line. Checked once per batch, not per value."""
    if not values:
        return b""
    data = b"\n".join(values) + b"\n"
    if data.count(b"\n") == len(values) and b"\r" not in data:
        return data
    return b"".join(v.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n" for v in values)
