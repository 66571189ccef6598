"""The dead-letter policy: what happens to a record that fails validation.

`validation.on_invalid`:
- `dead_letter` publishes a dead_letter record (original payload, where it came from, why)
  to the dead-letter topic and waits for the broker's acknowledgement before the caller may
  treat the source offset as done: a dead letter is never lost silently;
- `skip` logs and counts;
- `fail` raises `InvalidRecordError`, which stops the worker with a non-zero exit.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

from streams.config import JsonEngineConfig
from streams.topics import PARTITIONER, topic_name
from streams.validation import ValidationError

log = logging.getLogger(__name__)
DELIVERY_TIMEOUT_S = 60.0


class InvalidRecordError(Exception):
    """An invalid record under `on_invalid: fail`."""


class DeadLetterError(Exception):
    """Dead letters could not be delivered; the source offsets must not be marked done."""


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
    """Applies `on_invalid` to invalid records, in batches, with delivery confirmed."""

    def __init__(self, config: JsonEngineConfig, producer: Producer | None = None):
        self.mode = config.validation.on_invalid
        self.limit = config.validation.max_dead_letter_payload_bytes
        self.topic = topic_name(config, "dead_letter")
        self.counts: dict[str, int] = {}
        self._producer = producer
        self._client_config = config.kafka.client_config()
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

    def flush(self) -> None:
        """Deliver the queued dead letters; raise DeadLetterError unless all were acknowledged."""
        if not self._pending:
            return
        producer = self._get_producer()
        failures: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for value in self._pending:
            self._produce(producer, value, on_delivery)
        remaining = producer.flush(DELIVERY_TIMEOUT_S)
        if remaining or failures:
            raise DeadLetterError(
                f"{len(failures) + remaining} of {len(self._pending)} dead letters to "
                f"{self.topic} were not acknowledged: {failures[:3] or 'timed out'}"
            )
        log.info("published %d dead letters to %s", len(self._pending), self.topic)
        self._pending.clear()

    def _produce(self, producer: Producer, value: bytes, on_delivery: Any) -> None:
        while True:
            try:
                producer.produce(self.topic, value, on_delivery=on_delivery)
                return
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                raise DeadLetterError(f"cannot publish dead letter to {self.topic}: {exc}") from exc

    def _get_producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    **self._client_config,
                    "enable.idempotence": True,
                    "acks": "all",
                    "compression.type": "zstd",
                    "partitioner": PARTITIONER,
                    "linger.ms": 5,
                    "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000) - 5000,
                }
            )
        return self._producer
