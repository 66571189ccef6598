"""One topic's fetched batches, parsed and validated once, handed to each of its readers.

A topic may have several readers in one worker (the comparisons feed their sink, the
training deriver and the aggregation); each record is checked once for all, here, at the
record's edge. What a reader gets is either a record it can handle or the reason it cannot:
- parsed and validated against its schema (streams/validation.py), integers spelt as floats
  made ints, event times outside the years 1970-9999 refused (`timestamp_range`);
- its event time placed: a comparison without `timestamp` takes its Kafka record time (a
  record without one cannot be placed: `timestamp_range`), and an event time more than
  `aggregation.max_future_seconds` ahead of its Kafka record time is refused (`future`),
  so that no clock far ahead moves a stream time, a merge, a window or a dedupe horizon;
- a value in Confluent's Schema Registry wire format (byte 0, a schema id, the JSON) is
  unframed once its id is allowed (streams/readers/schema_ids.py): the readers get the JSON
  alone, checked like any other; an id not allowed is `unknown_schema_id`, and the dead
  letter of a framed record keeps the framed value, as it came;
- anything unforeseen while checking one record makes it a dead letter (`internal`), never
  a stopped worker.
Both times are fixed in the record as it sits in Kafka, so a replay gives the same verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, Protocol

import orjson

from sinks.files.buckets import MAX_TIME_MS, TIME_FIELD
from streams.config import SchemaRegistryConfig
from streams.readers.dedupe import RecordIds
from streams.readers.failures import Fatal
from streams.readers.schema_ids import SchemaIds, Unframed, framed
from streams.validation import TIMESTAMP_RANGE, ValidationError, Validator

log = logging.getLogger(__name__)
FUTURE: Final = "future"
INTERNAL: Final = "internal"
# The kinds whose event time the edge checks against the record's time: the inputs that
# anyone may produce (aggregated stats and dead letters are json-engine's own).
CHECKED_TIMES: Final = ("engine_execution", "comparison_result", "training_sample")

# A consumed record (confluent-kafka's Message: offset(), value(), key(), timestamp()) and what
# validation made of it: the parsed value or the error, not both. A plain tuple: one is built
# per record, and a NamedTuple cost ~1 µs more each (bench/RESULTS.md).
Parsed = tuple[Any, dict[str, Any] | None, ValidationError | None]
# The route kind of a topic whose readers decode the bytes themselves (parsed value: bytes).
RAW = "raw"


class Reader(Protocol):
    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> int | None:
        """Take the records; a reader may take only the first n (return n): then the readers
        after it get those n too, and the rest comes again after a checkpoint."""
        ...


class LocalRecord:
    """A record made in memory with what the readers use of a consumed Message (offset,
    value, timestamp): for feeding readers without a broker (benches, unit tests)."""

    __slots__ = ("_offset", "_timestamp", "_value")

    def __init__(self, offset: int, value: bytes | None, timestamp: int | None = None):
        self._offset, self._value, self._timestamp = offset, value, timestamp

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (0, 0) if self._timestamp is None else (1, self._timestamp)


def record_time(record: Any) -> int | None:
    """The Kafka record timestamp in epoch ms, if the record has one."""
    kind, ts = record.timestamp()
    return ts if kind else None


def internal_error(exc: BaseException, where: str) -> ValidationError:
    """The last line of defence: an unforeseen failure on one record, as its dead letter's
    reason (the exception's type and message), so that it fails that record only."""
    log.error("internal error on one record in %s", where, exc_info=exc)
    return ValidationError(INTERNAL, f"{where}: {type(exc).__name__}: {exc}"[:1024])


# Records parsed and handed to the readers at a time. Every reader passes over the parsed
# records again (the sink, the fold's columns, ids): a thousand of them (~1.5 MB) are still in
# the core's cache when it does, a consumed batch of 10,000 is not. Readers take batches of
# any size already (a consume() call returns what it has). Measured in a worker, 300k events,
# six interleaved pairs: 3-10% more events/s, sink-only and with the aggregation on.
CHUNK: Final = 1000


class TopicRoute:
    """The batch handler of one topic: parses (and validates, given a `kind`) once."""

    def __init__(
        self,
        topic: str,
        kind: str | None,
        validator: Validator,
        max_future_seconds: float | None = None,
        schema_ids: SchemaIds | None = None,
    ):
        self.topic = topic
        self.kind = kind
        self.validator = validator
        # Without kafka.schema_registry every framed value is `unknown_schema_id`.
        self.schema_ids = schema_ids or SchemaIds(SchemaRegistryConfig())
        self.readers: list[Reader] = []
        self.ids: RecordIds | None = None  # set for kinds with an id (streams/readers/dedupe.py)
        self.time_field = TIME_FIELD.get(kind) if kind in CHECKED_TIMES else None
        self.max_future_ms = (
            None if max_future_seconds is None else round(max_future_seconds * 1000)
        )

    def on_records(self, partition: int, records: Sequence[Any]) -> int:
        """Hand the records to every reader, `CHUNK` at a time; return how many were taken (a
        prefix: a chunk some reader took only part of is the last one)."""
        taken = 0
        for at in range(0, len(records), CHUNK):
            chunk = records[at : at + CHUNK]
            got = self._on_chunk(partition, chunk)
            taken += got
            if got < len(chunk):
                break
        return taken

    def _on_chunk(self, partition: int, records: Sequence[Any]) -> int:
        items = [self._parse(record) for record in records]
        ids = self.ids
        if ids is not None:
            ids.begin()
            self._identify(ids, partition, items)
        for reader in self.readers:
            taken = reader.on_parsed(partition, items)
            if taken is not None and taken < len(items):
                items = items[:taken]
        if ids is not None:
            ids.end(partition, len(items))
        return len(items)

    def _identify(self, ids: RecordIds, partition: int, items: list[Parsed]) -> None:
        """Records with an id: forwarded home, or dropped as copies (streams/readers/dedupe.py)."""
        marker = ids.marker
        for n, (record, parsed, _error) in enumerate(items):
            if parsed is None or (marker is not None and marker not in parsed):
                continue
            try:
                verdict = ids.check(partition, n, record, parsed)
            except Fatal:
                raise
            except Exception as exc:  # one record fails, never the worker
                verdict = internal_error(exc, f"checking the id of a record of {self.topic}")
            if verdict is not None:
                items[n] = (record, None, verdict)

    def _parse(self, record: Any) -> Parsed:
        value = record.value()
        if value is None:
            return (record, None, ValidationError("invalid_json", "record has no value"))
        if self.kind == RAW:  # bytes for the reader to decode (OTLP protobuf or JSON)
            return (record, value, None)
        try:
            if self.kind is None:  # internal topics: written by json-engine itself
                return (record, orjson.loads(value), None)
            parsed = self.validator.validate(self.kind, value)
            if self.time_field is not None:
                self._place(record, parsed)
            return (record, parsed, None)
        except ValidationError as exc:
            if self.kind is not None and framed(value):  # looked for only once JSON failed
                return self._unframe(record, value)
            return (record, None, exc)
        except orjson.JSONDecodeError as exc:
            return (record, None, ValidationError("invalid_json", str(exc)))
        except Exception as exc:  # one record fails, never the worker
            return (record, None, internal_error(exc, f"reading {self.topic}"))

    def _check(self, record: Any, value: bytes) -> Parsed:
        """Validate and place one record of the route's kind (`_parse` inlines the same)."""
        try:
            parsed = self.validator.validate(self.kind, value)  # type: ignore[arg-type]
            if self.time_field is not None:
                self._place(record, parsed)
            return (record, parsed, None)
        except ValidationError as exc:
            return (record, None, exc)
        except Exception as exc:  # one record fails, never the worker
            return (record, None, internal_error(exc, f"reading {self.topic}"))

    def _unframe(self, record: Any, value: bytes) -> Parsed:
        """A value in Confluent's wire format: its id checked, then its JSON alone as the
        record; a dead letter keeps the framed value (`record`). RegistryUnavailable passes."""
        try:
            inner, error = self.schema_ids.check(value)
        except Fatal:
            raise
        except Exception as exc:  # one record fails, never the worker
            return (record, None, internal_error(exc, f"reading {self.topic}"))
        if inner is None:
            return (record, None, error)
        unframed = Unframed(record, inner)
        item = self._check(unframed, inner)
        return item if item[2] is None else (record, None, item[2])

    def _place(self, record: Any, parsed: dict[str, Any]) -> None:
        """Check the event time against the record's own time (raises ValidationError)."""
        field = self.time_field
        ts = parsed.get(field)
        kind, record_ts = record.timestamp()
        if ts is None:  # an optional time (comparisons): the record's
            if not kind or not 1 <= record_ts <= MAX_TIME_MS:
                raise ValidationError(
                    TIMESTAMP_RANGE,
                    f"no {field}, and the record's own timestamp ({record_ts}) is not a time "
                    "between 1970 and 9999",
                    path=field,
                )
            parsed[field] = record_ts
        elif kind and self.max_future_ms is not None and ts - record_ts > self.max_future_ms:
            raise ValidationError(
                FUTURE,
                f"{field} {ts} is {(ts - record_ts) / 1000:.0f} s ahead of the record's own "
                f"timestamp {record_ts} (limit aggregation.max_future_seconds: "
                f"{self.max_future_ms / 1000:g})",
                path=field,
            )
