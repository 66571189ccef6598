"""Topics of the Contract, created idempotently; and the fixture's broker takes a round trip."""

from __future__ import annotations

import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from streams.config import JsonEngineConfig
from streams.topics import create_topics, list_topics, pipeline_topics
from tests.workers import cli


def test_produce_consume_round_trip(config: JsonEngineConfig) -> None:
    topic = config.kafka.topic_prefix + "roundtrip"
    create_topics(config, [topic])
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers})
    payload = uuid.uuid4().bytes
    producer.produce(topic, payload, key=b"k")
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        msg = None
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                break
        assert msg is not None and msg.value() == payload and msg.key() == b"k"
    finally:
        consumer.close()


def test_topics_create_twice_is_idempotent(config: JsonEngineConfig, config_file: Path) -> None:
    expected = list(pipeline_topics(config).values())
    assert expected == [
        config.kafka.topic_prefix + s
        for s in (
            "engine-execution",
            "comparison-result",
            "training-sample",
            "aggregated-stats",
            "dead-letter",
            "alerts",
        )
    ]
    first = cli("topics", "create", "--config", str(config_file))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 8
    second = cli("topics", "create", "--config", str(config_file))
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("exists") == 8
    listed = {t.name: t for t in list_topics(config)}
    assert set(expected) <= set(listed)
    assert all(listed[name].partitions == 3 for name in expected)
