"""The one workload every contender reads: N seeded engine_execution events on a fresh topic.

Published once per benchmark run, keyed by engine_id (8 engines) over 6 partitions with the
Publisher's own producer settings (idempotent, acks=all, lz4), so that every contender reads
exactly the same records, batches and compression from the broker.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from streams import events
from streams.config import ChannelsConfig, JsonEngineConfig, KafkaConfig
from streams.publisher import producer_settings
from streams.topics import create_topics, topic_name

ENGINES: tuple[str, ...] = tuple(f"engine-{i:02d}" for i in range(8))
PARTITIONS = 6
TS = 1_764_300_000_000


@dataclass(frozen=True)
class Workload:
    """What was published where; `total_bytes` counts every line with its newline."""

    bootstrap: str
    prefix: str
    topic: str
    events: int
    total_bytes: int
    seed: int
    publish_seconds: float
    partition_counts: tuple[int, ...] = ()

    @property
    def avg_bytes(self) -> float:
        return self.total_bytes / self.events - 1

    def config(self) -> JsonEngineConfig:
        """The pipeline config of this workload's prefix (its topics, its worker group)."""
        return JsonEngineConfig(
            kafka=KafkaConfig(
                bootstrap_servers=self.bootstrap,
                topic_prefix=self.prefix,
                partitions=PARTITIONS,
            ),
            channels=ChannelsConfig(),
        )


def payloads(count: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """(values, keys): `count` valid events as JSON bytes, the same for the same seed."""
    rng = random.Random(seed)
    values, keys = [], []
    for i in range(count):
        engine = rng.choice(ENGINES)
        values.append(orjson.dumps(events.engine_execution(rng, engine, TS + i)))
        keys.append(engine.encode())
    return values, keys


def publish(bootstrap: str, count: int, seed: int) -> Workload:
    """Create a fresh prefix's topics and publish the workload to its engine-execution topic."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    probe = Workload(bootstrap, prefix, "", count, 0, seed, 0.0)
    cfg = probe.config()
    create_topics(cfg)
    topic = topic_name(cfg, "engine_execution")
    values, keys = payloads(count, seed)
    producer = Producer(producer_settings(cfg, delivery_timeout_s=120))
    failed = 0

    def report(err: object, _msg: object) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    start = time.perf_counter()
    for value, key in zip(values, keys, strict=True):
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(180)
    elapsed = time.perf_counter() - start
    if failed or remaining:
        raise SystemExit(f"publishing the workload failed: {failed + remaining} events lost")
    total = sum(len(v) + 1 for v in values)
    counts = partition_counts(bootstrap, topic)
    if sum(counts) != count:
        raise SystemExit(f"the workload topic holds {sum(counts)} records, expected {count}")
    return Workload(bootstrap, prefix, topic, count, total, seed, elapsed, counts)


def partition_counts(bootstrap: str, topic: str) -> tuple[int, ...]:
    """Records per partition (keys are 8 engine ids: the spread is uneven, and it bounds
    what a second worker can take over)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        counts = []
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            counts.append(high - low)
        return tuple(counts)
    finally:
        consumer.close()
