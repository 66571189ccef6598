"""Training samples derived from comparisons (Contract → Training samples).

Exactly once end to end by transaction (streams/worker/derived.py): a sample is published in
the checkpoint transaction that commits its comparison's offset, so a replay after a crash
never shows a second copy to the read-committed sink. Its id is a UUIDv5 of the comparison_id
and it is keyed by that id, so a copy published by anyone else lands in the same partition,
where the training-sample sink writes each sample_id once.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

from streams.config import JsonEngineConfig, Thresholds
from streams.topics import topic_name
from streams.validation import ValidationError, Validator
from streams.worker.derived import DerivingReader
from streams.worker.route import record_time

log = logging.getLogger(__name__)
SAMPLE_NAMESPACE = uuid.UUID("5b0c4d0e-2f43-4a8e-9a57-4d1d3c6a1e01")


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


class TrainingDeriver(DerivingReader):
    """Reader of the comparison topic: derives, validates and publishes samples."""

    def __init__(self, config: JsonEngineConfig, validator: Validator):
        super().__init__(topic_name(config, "training_sample"))
        self.thresholds = config.training.thresholds
        self.validator = validator

    def derive(
        self, partition: int, record: Any, value: dict[str, Any] | None
    ) -> list[tuple[bytes, bytes]]:
        if value is None:
            return []  # the comparison sink dead-letters it
        sample = derive_sample(value, self.thresholds, record_time(record))
        if sample is None:
            return []
        try:
            self.validator.validate("training_sample", sample)
        except ValidationError as exc:  # e.g. an output past the sample's length limits
            log.warning("no training sample from %s: %s", sample["source_trace_id"], exc)
            return []
        return [(sample["sample_id"].encode(), orjson.dumps(sample))]
