"""The workloads the contenders read: N seeded engine_execution events on a fresh topic.

Each is published once per benchmark run with the Publisher's own producer settings
(idempotent, acks=all, lz4, murmur2 key hashing), so that every contender of a workload reads
exactly the same records, batches and compression from the broker. Four shapes:

- `keyed` (every contender's): keyed by engine_id, 8 engines over 6 partitions. Murmur2 puts
  them in 4 of the 6 partitions, one of them with half the events: a second worker can only
  take over whole partitions, so this shape bounds what it can do.
- `spread` (issue 12, two workers against one): keyed by engine_id, 24 engines chosen so that
  each partition holds 4 of them; every partition gets about a sixth of the events, and any
  split of the partitions between workers splits the load.
- `plain` (issue 25): `keyed` published uncompressed (`compression.type: none`), as
  producers that never set a compression send it: the consumer then moves and copies every
  byte itself, and the lz4 batches no longer hide what parsing costs.
- `hot` (issue 13, a hot engine): `engine-00` has `HOT_SHARE` of the executions and is
  produced without a key (librdkafka spreads null keys over every partition), the rest are
  keyed over 7 other engines.

`spread` and `hot` hold `EVENTS_SCALE` times the events of `keyed`.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from streams import events
from streams.brokers import watermarks
from streams.config import ChannelsConfig, JsonEngineConfig, KafkaConfig
from streams.publisher import producer_settings
from streams.topics import consumer_group, create_topics, topic_name

PARTITIONS = 6
TS = 1_764_300_000_000
SHAPES = ("keyed", "plain", "spread", "hot")
ENGINES: tuple[str, ...] = tuple(f"engine-{i:02d}" for i in range(8))
SPREAD_PER_PARTITION = 4
HOT_ENGINE = ENGINES[0]
HOT_SHARE = 0.85
# Events of each shape per `--events`: the two-worker comparisons need a longer run, since a
# second worker takes part only after a rebalance (1-2 s) and the steady window starts there.
EVENTS_SCALE = {"keyed": 1, "plain": 1, "spread": 3, "hot": 3}


def murmur2_partition(key: bytes, partitions: int = PARTITIONS) -> int:
    """The partition librdkafka's `murmur2_random` (and Java's default) gives a key."""
    m, length = 0x5BD1E995, len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[length - length % 4 :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def spread_engines(per_partition: int = SPREAD_PER_PARTITION) -> tuple[str, ...]:
    """`engine-NNN` names, the first `per_partition` that murmur2 puts in each partition."""
    chosen: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(names) < per_partition for names in chosen.values()):
        name = f"engine-{i:03d}"
        names = chosen[murmur2_partition(name.encode())]
        if len(names) < per_partition:
            names.append(name)
        i += 1
    return tuple(sorted(n for names in chosen.values() for n in names))


def engines_of(shape: str) -> tuple[str, ...]:
    return spread_engines() if shape == "spread" else ENGINES


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
    shape: str = "keyed"
    engines: int = len(ENGINES)
    unkeyed: int = 0  # events produced without a key

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

    @property
    def group(self) -> str:
        """The consumer group of json-engine workers on this workload's topic."""
        config = self.config()
        return consumer_group(config, topic_name(config, "engine_execution"))

    def describe(self) -> str:
        text = f"{self.shape}: {self.engines} engines"
        if self.shape == "plain":
            text += ", uncompressed"
        if self.unkeyed:
            text += f", {self.unkeyed / self.events:.0%} of the events ({HOT_ENGINE}) without key"
        counts = ", ".join(map(str, self.partition_counts))
        return f"{text}; per partition {counts}"


def payloads(count: int, seed: int, shape: str = "keyed") -> tuple[list[bytes], list[bytes | None]]:
    """(values, keys): `count` valid events as JSON bytes, the same for the same seed."""
    rng = random.Random(seed)
    values: list[bytes] = []
    keys: list[bytes | None] = []
    engines = engines_of(shape)
    others = ENGINES[1:]
    for i in range(count):
        key: bytes | None
        if shape == "hot" and rng.random() < HOT_SHARE:
            engine, key = HOT_ENGINE, None
        else:
            engine = rng.choice(others if shape == "hot" else engines)
            key = engine.encode()
        values.append(orjson.dumps(events.engine_execution(rng, engine, TS + i)))
        keys.append(key)
    return values, keys


def publish(bootstrap: str, count: int, seed: int, shape: str = "keyed") -> Workload:
    """Create a fresh prefix's topics and publish the workload to its engine-execution topic."""
    if shape not in SHAPES:
        raise ValueError(f"unknown workload shape {shape!r}; known: {', '.join(SHAPES)}")
    prefix = f"bench-{shape}-{uuid.uuid4().hex[:8]}."
    probe = Workload(bootstrap, prefix, "", count, 0, seed, 0.0)
    cfg = probe.config()
    create_topics(cfg)
    topic = topic_name(cfg, "engine_execution")
    values, keys = payloads(count, seed, shape)
    settings = producer_settings(cfg, delivery_timeout_s=120)
    if shape == "plain":
        settings["compression.type"] = "none"
    producer = Producer(settings)
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
    return Workload(
        bootstrap,
        prefix,
        topic,
        count,
        total,
        seed,
        elapsed,
        counts,
        shape,
        engines=len(engines_of(shape)),
        unkeyed=sum(1 for k in keys if k is None),
    )


def partition_counts(bootstrap: str, topic: str) -> tuple[int, ...]:
    """Records per partition (keys are engine ids: the spread bounds what a second worker can
    take over)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        counts = []
        for p in range(PARTITIONS):
            low, high = watermarks(consumer, TopicPartition(topic, p))
            counts.append(high - low)
        return tuple(counts)
    finally:
        consumer.close()
