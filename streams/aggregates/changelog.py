"""The aggregation's state in a compacted changelog topic: one changelog partition per owner.

Each stage of the aggregation owns state per input partition: the local fold of execution
partition p, of comparison partition p, and the merge of partials partition p. Each has its
own changelog partition (p, P + p, 2P + p for P partitions), so a restore reads only its own
records and never waits on another owner's open transaction. Records are written in the
worker's checkpoint transaction; a restore reads what is committed.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.config import JsonEngineConfig
from streams.topics import aggregates_state_topic

META_KEY = b"meta"
RESTORE_TIMEOUT_S = 120.0
STAGES = ("executions", "comparisons", "merge")


def changelog_partition(config: JsonEngineConfig, stage: str, partition: int) -> int:
    return STAGES.index(stage) * config.kafka.partitions + partition


def window_key(engine_id: str, start: int) -> bytes:
    return f"w|{engine_id}|{start}".encode()


def parse_window_key(key: bytes) -> tuple[str, int]:
    _, rest = key.decode().split("|", 1)
    engine, _, start = rest.rpartition("|")
    return engine, int(start)


def read_partition(config: JsonEngineConfig, partition: int) -> dict[bytes, Any]:
    """The committed content of one changelog partition: key → last value (None: deleted)."""
    topic = aggregates_state_topic(config)
    consumer = Consumer(
        {
            **config.kafka.client_config(),
            "group.id": f"{topic}-restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    content: dict[bytes, Any] = {}
    try:
        tp = TopicPartition(topic, partition, 0)
        _low, high = consumer.get_watermark_offsets(tp, timeout=30)
        consumer.assign([tp])
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while high > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"changelog {topic}[{partition}] not restored in time")
            msg = consumer.poll(0.5)
            if msg is None:
                if consumer.position([tp])[0].offset >= high:
                    break
                continue
            if msg.error():
                raise KafkaException(msg.error())
            value = msg.value()
            content[msg.key()] = None if value is None else orjson.loads(value)
            if msg.offset() >= high - 1:
                break
    finally:
        consumer.close()
    return content
