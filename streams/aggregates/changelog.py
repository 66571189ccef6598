"""The aggregation's state in a compacted changelog topic: one changelog partition per owner.

Each stage of the aggregation owns state per input partition: the local fold of execution
partition p, of comparison partition p, and the merge of partials partition p. Each has its
own changelog partition (p, P + p, 2P + p for P partitions), so a restore reads only its own
records and never waits on another owner's open transaction. Records are written in the
worker's checkpoint transaction; a restore reads what is committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streams.aggregates.windows import WindowState
from streams.brokers import watermarks
from streams.config import JsonEngineConfig
from streams.topics import aggregates_state_topic

META_KEY = b"meta"
RESTORE_TIMEOUT_S = 120.0
STAGES = ("executions", "comparisons", "merge")


def changelog_partition(config: JsonEngineConfig, stage: str, partition: int) -> int:
    return STAGES.index(stage) * config.kafka.partitions + partition


def window_key(engine_id: str, start: int) -> bytes:
    return f"w|{engine_id}|{start}".encode()


def engine_key(engine_id: str) -> bytes:
    """An engine's own state in the merge: its last emitted record and regression baseline."""
    return f"e|{engine_id}".encode()


def parse_window_key(key: bytes) -> tuple[str, int]:
    """`w|engine|start`; a start spelt as a float (state written before times were made
    ints at the edge) is read as the int it is."""
    _, rest = key.decode().split("|", 1)
    engine, _, start = rest.rpartition("|")
    return engine, int(float(start)) if "." in start else int(start)


def read_partitions(config: JsonEngineConfig, partitions: list[int]) -> dict[int, dict[bytes, Any]]:
    """The committed content of changelog partitions: per partition, key → last value (None:
    deleted). One consumer reads them all, each to its end (commit markers included)."""
    topic = aggregates_state_topic(config)
    content: dict[int, dict[bytes, Any]] = {p: {} for p in partitions}
    if not partitions:
        return content
    consumer = Consumer(
        {
            **config.kafka.client_config(),
            "group.id": f"{topic}-restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends = {p: watermarks(consumer, TopicPartition(topic, p))[1] for p in partitions}
        remaining = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in remaining])
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"changelog {topic} {sorted(remaining)} not restored in time")
            for msg in consumer.consume(10_000, 0.1):
                if msg.error():
                    raise KafkaException(msg.error())
                value = msg.value()
                content[msg.partition()][msg.key()] = None if value is None else orjson.loads(value)
            positions = consumer.position([TopicPartition(topic, p) for p in remaining])
            remaining -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
    finally:
        consumer.close()
    return content


class Stage:
    """What both stages share: their states per partition, restored from the changelog."""

    def __init__(self, config: JsonEngineConfig, stage: str, new_state: Callable[[], Any]):
        self.config = config
        self.stage = stage
        self.new_state = new_state
        self.states: dict[int, Any] = {}

    def changelog_partition(self, partition: int) -> int:
        return changelog_partition(self.config, self.stage, partition)

    def assign(self, partition: int, content: dict[bytes, Any]) -> None:
        """Take the partition over with its committed state (its changelog partition)."""
        state = self.new_state()
        for key, value in content.items():
            if key == META_KEY:
                for name, v in value.items():
                    setattr(state, name, v)
            elif value is None:
                continue
            elif key.startswith(b"e|"):
                state.engines[key[2:].decode()] = value
            else:
                state.windows[parse_window_key(key)] = WindowState.from_dict(value)
        self.states[partition] = state

    def release(self, partition: int) -> None:
        self.states.pop(partition, None)
