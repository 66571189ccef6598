"""Training samples derived from comparisons (Contract → Training samples).

Exactly once end to end by idempotence, not transactions: a sample's id is a UUIDv5 of its
comparison_id, it is keyed by that id (so every copy lands in one partition), and the
training-sample sink writes each sample_id once. The deriver reports a comparison offset as
done only after the broker acknowledged its sample, and the worker commits the smallest
offset that every reader of the comparison topic has made durable; a replay after SIGKILL
re-derives the same ids, which the sink drops.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer

from streams.config import JsonEngineConfig, Thresholds
from streams.topics import topic_name
from streams.validation import ValidationError, Validator

log = logging.getLogger(__name__)
SAMPLE_NAMESPACE = uuid.UUID("5b0c4d0e-2f43-4a8e-9a57-4d1d3c6a1e01")
DELIVERY_TIMEOUT_S = 60.0


class DerivationError(Exception):
    """Derived samples were not acknowledged; their comparisons are not done."""


def sample_id(comparison_id: str) -> str:
    """Deterministic: a replay of the same comparison never makes a second sample."""
    return str(uuid.uuid5(SAMPLE_NAMESPACE, comparison_id))


def tier_of(score: float, thresholds: Thresholds) -> str | None:
    """Boundaries are inclusive: a score exactly at a threshold takes that tier."""
    if score >= thresholds.gold:
        return "gold"
    if score >= thresholds.silver:
        return "silver"
    if score >= thresholds.bronze:
        return "bronze"
    return None


def derive_sample(
    comparison: dict[str, Any], thresholds: Thresholds, record_timestamp: int | None = None
) -> dict[str, Any] | None:
    """The training sample of a valid comparison, or None below the bronze threshold."""
    winner = comparison["winner"]
    tier = tier_of(winner["score"], thresholds)
    if tier is None:
        return None
    output = next(
        c["output"] for c in comparison["candidates"] if c["engine_id"] == winner["engine_id"]
    )
    return {
        "sample_id": sample_id(comparison["comparison_id"]),
        "created_at": comparison.get("timestamp") or record_timestamp,
        "source_trace_id": comparison["comparison_id"],
        "tier": tier,
        "input": comparison["query"],
        "output": output,
        "validation": {"quality_score": winner["score"], "validated": True},
    }


class TrainingDeriver:
    """Batch handler of the comparison topic: derives, validates and publishes samples."""

    def __init__(
        self, config: JsonEngineConfig, validator: Validator, producer: Producer | None = None
    ):
        self.thresholds = config.training.thresholds
        self.validator = validator
        self.topic = topic_name(config, "training_sample")
        self._producer = producer or Producer(
            {
                "bootstrap.servers": config.kafka.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000) - 5000,
            }
        )
        self._sent: dict[int, int] = {}  # partition → next offset, once acknowledged
        self.done: dict[int, int] = {}
        self._failures: list[str] = []
        self.derived = 0
        self.skipped_invalid = 0

    def on_records(self, partition: int, records: Sequence[Any]) -> None:
        for record in records:
            try:
                comparison = self.validator.validate("comparison_result", record.value or b"")
                sample = derive_sample(comparison, self.thresholds, record.timestamp)
                if sample is not None:
                    self.validator.validate("training_sample", sample)
            except ValidationError:
                self.skipped_invalid += 1  # the comparison sink dead-letters it
                sample = None
            if sample is not None:
                self._produce(sample)
            self._sent[partition] = record.offset + 1

    def _produce(self, sample: dict[str, Any]) -> None:
        value = orjson.dumps(sample)
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value,
                    key=sample["sample_id"].encode(),
                    on_delivery=self._on_delivery,
                )
                self.derived += 1
                return
            except BufferError:
                self._producer.poll(0.1)

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._failures.append(err.str())

    def flush(self) -> None:
        """Wait for acknowledgements; only then are the comparison offsets done."""
        if not self._sent:
            return
        remaining = self._producer.flush(DELIVERY_TIMEOUT_S)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise DerivationError(
                f"{remaining + len(failures)} training samples to {self.topic} were not "
                f"acknowledged: {failures[:3] or 'timed out'}"
            )
        self.done.update(self._sent)
        self._sent.clear()

    def release(self, partitions: Sequence[int]) -> None:
        self.flush()
        for partition in partitions:
            self.done.pop(partition, None)

    def close(self) -> None:
        self.flush()
