"""The worker's start-up check of its topics (issue 23): real broker, real worker processes.

Adversaries: topics made beforehand with other partition counts than the config's; a topic
the broker refuses to create (its name collides with an existing one: Kafka refuses `a.b`
beside `a_b`); topics whose max.message.bytes is above librdkafka's default producer limit.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import JsonEngineConfig
from streams.publisher import Publisher
from streams.topics import aggregates_state_topic, topic_name
from streams.training import sample_id
from tests.conftest import ConfigFactory
from tests.workers import WorkerProcess, cli, lines_of, records, wait_for_lines

FAST = {"auto_flush_seconds": 0.2, "roll_seconds": 0.5}


def make_topics(cfg: JsonEngineConfig, topics: dict[str, tuple[int, dict[str, str]]]) -> None:
    """name → (partitions, topic config), made before any worker runs."""
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    new = [NewTopic(name, count, 1, config=conf) for name, (count, conf) in topics.items()]
    for future in admin.create_topics(new).values():
        future.result(30)


def stopped(worker: WorkerProcess, timeout: float = 90) -> tuple[int, str]:
    """The exit code of a worker that must stop by itself, and its log."""
    try:
        code = worker.wait(timeout)
    finally:
        worker.kill()
    return code, worker.log().decode(errors="replace")


def test_a_partition_count_other_than_the_config_stops_the_worker_with_exit_2(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config()  # kafka.partitions = 3
    executions = topic_name(cfg, "engine_execution")
    state = aggregates_state_topic(cfg)
    make_topics(cfg, {executions: (2, {}), state: (3, {})})
    code, log = stopped(WorkerProcess(path, tmp_path).start(wait_ready=False))
    assert code == 2, log
    assert f"topic {executions} has 2 partitions, the config needs 3" in log, log
    assert f"topic {state} has 3 partitions, the config needs 9" in log, log
    assert "recovered" not in log, "partitions were taken before the topics were checked"
    # `topics create` says the same, and exits 2 too
    result = cli("topics", "create", "--config", str(path))
    assert result.returncode == 2, result
    assert f"topic {executions} has 2 partitions, the config needs 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_topic_the_broker_refuses_to_create_stops_the_worker_with_exit_2(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config()
    dead_letters = topic_name(cfg, "dead_letter")
    assert "." in dead_letters  # the test's prefix ends with a dot
    make_topics(cfg, {dead_letters.replace(".", "_"): (3, {})})
    code, log = stopped(WorkerProcess(path, tmp_path).start(wait_ready=False))
    assert code == 2, log
    assert f"topic {dead_letters} does not exist and cannot be created" in log, log
    assert "collides with existing topic" in log, log
    assert "recovered" not in log


def test_the_transactional_producer_takes_what_the_topics_take(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Kafka's default topic limit (1,048,588 bytes) is above librdkafka's producer default
    (1,000,000): a comparison whose training sample lies between them made every checkpoint
    abort. And a dead-letter topic made with a larger limit takes dead letters up to it."""
    big = 3_000_000
    path, cfg = make_config(
        {
            "channels": {"training_sample": FAST, "dead_letter": FAST},
            "validation": {"max_payload_bytes": 2_000_000, "max_dead_letter_payload_bytes": big},
        }
    )
    limit = {"max.message.bytes": str(big)}
    executions, dead_letters = topic_name(cfg, "engine_execution"), topic_name(cfg, "dead_letter")
    make_topics(cfg, {executions: (3, limit), dead_letters: (3, limit)})
    worker = WorkerProcess(path, tmp_path)
    try:
        worker.start()
        worker.wait_for(f"takes records up to {big} bytes".encode(), 60)
        comparison = {
            "comparison_id": "just-over-a-megabyte",
            "query": "q" * 600_000,
            "candidates": [
                {"engine_id": "a", "output": "a" * 410_000, "metrics": {}, "score": 0.95},
                {"engine_id": "b", "output": "b", "metrics": {}, "score": 0.1},
            ],
            "winner": {"engine_id": "a", "score": 0.95},
            "metrics": {},
            "timestamp": int(time.time() * 1000),
        }
        with Publisher(cfg) as publisher:
            publisher.collect_comparison_result(comparison)
        # 1.4 MB, 0.7 M characters: its dead letter is larger than the other topics take, and
        # within the schema's 1 MiB characters of payload
        invalid = orjson.dumps({"engine_id": "e", "input": "é" * 700_000})
        producer = Producer(
            {"bootstrap.servers": cfg.kafka.bootstrap_servers, "message.max.bytes": big}
        )
        producer.produce(executions, invalid)
        assert producer.flush(30) == 0
        samples = wait_for_lines(cfg, "training_sample", 1, timeout=60)
        rejected = wait_for_lines(cfg, "dead_letter", 1, timeout=60)
        assert len(samples) == 1 and len(rejected) == 1, worker.tail()
        assert worker.alive(), worker.tail()
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    assert len(samples[0]) > 1_000_000, len(samples[0])
    assert [s["sample_id"] for s in records(samples)] == [sample_id("just-over-a-megabyte")]
    assert len(rejected[0]) > 1_400_000 and len(lines_of(cfg, "dead_letter")) == 1
