"""Comparisons re-keyed per engine, so that all state of one engine lives in one partition.

Each valid comparison becomes one observation per candidate on the internal topic
`<prefix>worker-comparisons-by-engine`, keyed by engine_id with the Java-compatible murmur2
partitioner (the one Kafka's Java clients, aiokafka and our Publisher use for the input
topics), so an engine's observations land in the partition of its executions. Each carries
its source (partition, offset, candidate index): a replay after a crash re-sends the same
sources, which the aggregator drops. A source offset is done once the broker acknowledged.
"""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import Producer

from streams.config import JsonEngineConfig
from streams.derived import DerivingReader
from streams.topics import rekey_topic


def observations(
    comparison: dict[str, Any], record_timestamp: int | None, partition: int, offset: int
) -> list[dict[str, Any]]:
    """Per candidate: its quality (own score, else winner.score if it won) and whether it won."""
    winner = comparison["winner"]
    ts = comparison.get("timestamp") or record_timestamp
    result = []
    for index, candidate in enumerate(comparison["candidates"]):
        won = candidate["engine_id"] == winner["engine_id"]
        quality = candidate.get("score")
        if quality is None and won:
            quality = winner["score"]
        result.append(
            {
                "engine_id": candidate["engine_id"],
                "ts": ts,
                "quality": quality,
                "win": won,
                "comparison_id": comparison["comparison_id"],
                "src": [partition, offset, index],
            }
        )
    return result


class Rekeyer(DerivingReader):
    """Reader of the comparison topic that feeds the aggregator's second input."""

    def __init__(self, config: JsonEngineConfig, producer: Producer | None = None):
        super().__init__(config, rekey_topic(config), producer)

    def derive(
        self, partition: int, record: Any, value: dict[str, Any] | None
    ) -> list[tuple[bytes, bytes]]:
        if value is None:
            return []
        return [
            (obs["engine_id"].encode(), orjson.dumps(obs))
            for obs in observations(value, record.timestamp, partition, record.offset)
        ]
