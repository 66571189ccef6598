"""The rule that makes a training sample of a comparison (Contract → Training samples).

Pure functions, no broker: the worker's deriver (`streams.training.deriver`) applies them to
each valid comparison. A sample's id is a UUIDv5 of the comparison_id, so a replay never makes
a second sample.
"""

from __future__ import annotations

import uuid
from typing import Any

from streams.config import Thresholds

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
    """The training sample of a valid comparison, or None below the bronze threshold or for
    a tie without a winner (no answer was preferred, and no score says how good it was)."""
    winner = comparison.get("winner")
    if winner is None:
        return None
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
