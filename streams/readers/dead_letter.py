"""The dead-letter policy: what happens to a record that fails validation.

`validation.on_invalid`:
- `dead_letter` publishes a dead_letter record (original payload, where it came from, why)
  to the dead-letter topic in the same Kafka transaction that commits the source offset
  (streams/worker/checkpoint.py): a dead letter is never lost, and never published twice;
- `skip` logs and counts;
- `fail` raises `InvalidRecordError`, which stops the worker with a non-zero exit.

A dead letter always fits its topic: its payload is cut (`payload_truncated`) to
`max_dead_letter_payload_bytes` and then, escaped as JSON, to what the dead-letter topic
takes; its message to what the dead_letter schema allows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson

from streams.config import JsonEngineConfig
from streams.readers.failures import Fatal
from streams.readers.outbox import MessageLimits, Outgoing
from streams.topics import topic_name
from streams.validation import TOO_LARGE, ValidationError

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 4096  # dead_letter.error's maxLength


class InvalidRecordError(Fatal):
    """An invalid record under `on_invalid: fail`."""


def dead_letter_record(
    channel: str,
    topic: str,
    partition: int,
    offset: int,
    error: ValidationError | str,
    payload: bytes | None,
    limit: int,
) -> dict[str, Any]:
    """The Contract's dead_letter record; the payload is kept as text, truncated past `limit`."""
    raw = payload or b""
    truncated = len(raw) > limit
    text = raw[:limit].decode("utf-8", errors="backslashreplace")
    reason = error.reason if isinstance(error, ValidationError) else "invalid"
    message = str(error) or reason
    return {
        "schema_version": 1,
        "channel": channel,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "error": message if len(message) <= MAX_ERROR_CHARS else message[:4093] + "...",
        "reason": reason,
        "payload": text,
        "payload_truncated": truncated,
        "received_at": int(time.time() * 1000),
    }


def too_large(what: str, size: int, topic: str, room: int) -> ValidationError:
    """A record derived from the source that its topic cannot take (the source's dead
    letter carries it, cut to fit)."""
    return ValidationError(
        TOO_LARGE, f"{what} is {size} bytes, more than {topic} takes ({room}, max.message.bytes)"
    )


def fitted(record: dict[str, Any], room: int) -> bytes:
    """The dead letter serialized within `room` bytes: the payload is cut until it fits
    (escaped as JSON a character takes 1 to 6 bytes, so cutting as many characters as there
    are bytes too many always does)."""
    value = orjson.dumps(record)
    while len(value) > room and record["payload"]:
        payload = record["payload"]
        record["payload"] = payload[: max(0, len(payload) - (len(value) - room))]
        record["payload_truncated"] = True
        value = orjson.dumps(record)
    return value


class DeadLetterPolicy:
    """Applies `on_invalid` to invalid records; dead letters wait for the next checkpoint."""

    def __init__(self, config: JsonEngineConfig, limits: MessageLimits | None = None):
        self.mode = config.validation.on_invalid
        self.limit = config.validation.max_dead_letter_payload_bytes
        self.topic = topic_name(config, "dead_letter")
        self.limits = limits or MessageLimits()
        self.counts: dict[str, int] = {}
        self._pending: list[bytes] = []

    def reject(
        self,
        channel: str,
        topic: str,
        partition: int,
        offset: int,
        error: ValidationError | str,
        payload: bytes | None,
    ) -> None:
        """Handle one invalid record now (`skip`, `fail`) or queue it (`dead_letter`)."""
        self.counts[channel] = self.counts.get(channel, 0) + 1
        where = f"{topic}[{partition}]@{offset}"
        if self.mode == "fail":
            raise InvalidRecordError(f"invalid record at {where} ({channel}): {error}")
        if self.mode == "skip":
            log.warning("skipping invalid record at %s (%s): %s", where, channel, error)
            return
        record = dead_letter_record(channel, topic, partition, offset, error, payload, self.limit)
        self._pending.append(fitted(record, self.limits.room(self.topic)))

    def drain(self) -> Iterator[Outgoing]:
        """The queued dead letters, for the checkpoint's transaction (none stays queued)."""
        pending, self._pending = self._pending, []
        for value in pending:
            yield (self.topic, None, value, None)

    def reset(self) -> None:
        """A rolled-back checkpoint: the records are read again and rejected again."""
        self._pending.clear()
