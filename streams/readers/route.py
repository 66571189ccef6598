"""One topic's fetched batches, parsed and validated once, handed to each of its readers.

A topic may have several readers in one worker (the comparisons feed their sink, the
training deriver and the aggregator's re-keyer); each record is validated once for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from streams.validation import ValidationError, Validator

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


class TopicRoute:
    """The batch handler of one topic: parses (and validates, given a `kind`) once."""

    def __init__(self, topic: str, kind: str | None, validator: Validator):
        self.topic = topic
        self.kind = kind
        self.validator = validator
        self.readers: list[Reader] = []

    def on_records(self, partition: int, records: Sequence[Any]) -> int:
        """Hand the records to every reader; return how many were taken (a prefix)."""
        items = [self._parse(record) for record in records]
        for reader in self.readers:
            taken = reader.on_parsed(partition, items)
            if taken is not None and taken < len(items):
                items = items[:taken]
        return len(items)

    def _parse(self, record: Any) -> Parsed:
        value = record.value()
        if value is None:
            return (record, None, ValidationError("invalid_json", "record has no value"))
        if self.kind == RAW:  # bytes for the reader to decode (OTLP protobuf or JSON)
            return (record, value, None)
        try:
            if self.kind is None:  # internal topics: written by json-engine itself
                return (record, orjson.loads(value), None)
            return (record, self.validator.validate(self.kind, value), None)
        except ValidationError as exc:
            return (record, None, exc)
        except orjson.JSONDecodeError as exc:
            return (record, None, ValidationError("invalid_json", str(exc)))
