"""One topic's fetched batches, parsed and validated once, handed to each of its readers.

A topic may have several readers in one worker (the comparisons feed their sink, the
training deriver and the aggregator's re-keyer); each record is validated once for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import orjson

from streams.validation import ValidationError, Validator


class Parsed(NamedTuple):
    """A consumed record and what validation made of it: `value` or `error`, not both."""

    record: Any  # aiokafka ConsumerRecord: offset, value, key, timestamp
    value: dict[str, Any] | None
    error: ValidationError | None


class Reader(Protocol):
    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None: ...


class TopicRoute:
    """The batch handler of one topic: parses (and validates, given a `kind`) once."""

    def __init__(self, topic: str, kind: str | None, validator: Validator):
        self.topic = topic
        self.kind = kind
        self.validator = validator
        self.readers: list[Reader] = []

    def on_records(self, partition: int, records: Sequence[Any]) -> None:
        items = [self._parse(record) for record in records]
        for reader in self.readers:
            reader.on_parsed(partition, items)

    def _parse(self, record: Any) -> Parsed:
        value = record.value
        if value is None:
            return Parsed(record, None, ValidationError("invalid_json", "record has no value"))
        try:
            if self.kind is None:  # internal topics: written by json-engine itself
                return Parsed(record, orjson.loads(value), None)
            return Parsed(record, self.validator.validate(self.kind, value), None)
        except ValidationError as exc:
            return Parsed(record, None, exc)
        except orjson.JSONDecodeError as exc:
            return Parsed(record, None, ValidationError("invalid_json", str(exc)))
