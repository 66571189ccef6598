"""The dead-letter policy: what happens to a record that fails validation.

`validation.on_invalid`:
- `dead_letter` publishes a dead_letter record (original payload, where it came from, why)
  to the dead-letter topic in the same Kafka transaction that commits the source offset
  (streams/worker/checkpoint.py): a dead letter is never lost, and never published twice;
- `skip` logs and counts;
- `fail` raises `InvalidRecordError`, which stops the worker with a non-zero exit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson

from streams.config import JsonEngineConfig
from streams.readers.outbox import Outgoing
from streams.topics import topic_name
from streams.validation import ValidationError

log = logging.getLogger(__name__)


class InvalidRecordError(Exception):
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
    return {
        "schema_version": 1,
        "channel": channel,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "error": str(error),
        "reason": reason,
        "payload": text,
        "payload_truncated": truncated,
        "received_at": int(time.time() * 1000),
    }


class DeadLetterPolicy:
    """Applies `on_invalid` to invalid records; dead letters wait for the next checkpoint."""

    def __init__(self, config: JsonEngineConfig):
        self.mode = config.validation.on_invalid
        self.limit = config.validation.max_dead_letter_payload_bytes
        self.topic = topic_name(config, "dead_letter")
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
        self._pending.append(orjson.dumps(record))

    def drain(self) -> Iterator[Outgoing]:
        """The queued dead letters, for the checkpoint's transaction (none stays queued)."""
        pending, self._pending = self._pending, []
        for value in pending:
            yield (self.topic, None, value, None)

    def reset(self) -> None:
        """A rolled-back checkpoint: the records are read again and rejected again."""
        self._pending.clear()
