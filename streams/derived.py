"""Readers that publish derived records (training samples, re-keyed comparisons).

The shared rule of exactly-once by idempotence: a source offset counts as done only once the
broker acknowledged every record derived from it; a replay re-derives the same records,
which their consumers drop (by sample_id, by source offset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Producer

from streams.config import JsonEngineConfig
from streams.route import Parsed
from streams.topics import PARTITIONER

DELIVERY_TIMEOUT_S = 60.0


class DerivationError(Exception):
    """Derived records were not acknowledged; their sources are not done."""


class DerivingReader:
    """Base of a topic reader that publishes what it derives; subclasses implement `derive`."""

    def __init__(
        self,
        config: JsonEngineConfig,
        topic: str,
        producer: Producer | None = None,
        **producer_config: Any,
    ):
        self.topic = topic
        self._producer = producer or Producer(
            {
                **config.kafka.client_config(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "partitioner": PARTITIONER,
                "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000) - 5000,
                **producer_config,
            }
        )
        self._sent: dict[int, int] = {}  # partition → next offset, once acknowledged
        self.done: dict[int, int] = {}
        self._failures: list[str] = []

    def derive(
        self, partition: int, record: Any, value: dict[str, Any] | None
    ) -> list[tuple[bytes, bytes]]:
        """(key, value) records derived from one consumed record (`value` None: invalid)."""
        raise NotImplementedError

    def on_parsed(self, partition: int, items: Sequence[Parsed]) -> None:
        for record, value, _error in items:
            for key, derived in self.derive(partition, record, value):
                self._produce(key, derived)
            self._sent[partition] = record.offset + 1

    def _produce(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key=key, on_delivery=self._report)
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: wait, never drop

    def _report(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._failures.append(err.str())

    def flush(self) -> None:
        """Wait for acknowledgements; only then are the source offsets done."""
        if not self._sent:
            return
        remaining = self._producer.flush(DELIVERY_TIMEOUT_S)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise DerivationError(
                f"{remaining + len(failures)} records to {self.topic} were not acknowledged: "
                f"{failures[:3] or 'timed out'}"
            )
        self.done.update(self._sent)
        self._sent.clear()

    def release(self, partitions: Sequence[int]) -> None:
        self.flush()
        for partition in partitions:
            self.done.pop(partition, None)

    def close(self) -> None:
        self.flush()
