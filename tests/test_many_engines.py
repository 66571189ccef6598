"""10,000 distinct engine ids, every one in every partition (null keys): a worker's memory
stays bounded, and the windows handed over early past `max_windows_per_partition` change
no value (the pandas twin)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streams.topics import create_topics
from tests.conftest import ConfigFactory
from tests.test_aggregator import (
    AGG,
    FAST,
    T0,
    WIDTH,
    assert_matches,
    by_key,
    comparison,
    execution,
    oracle,
)
from tests.workers import WorkerProcess, lines_of, wait_for_lines

ENGINES = 10_000
PARTITIONS = 3
RSS_LIMIT_MB = 600  # a worker holds ~250 MB with a few engines (bench/RESULTS.md)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_ten_thousand_engines_in_every_partition_keep_memory_bounded(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            "kafka": {"partitions": PARTITIONS},
            "aggregation": {**AGG, "idle_seconds": 300, "max_windows_per_partition": 2000},
            "channels": FAST,
            "training": {"enabled": False},
        }
    )
    create_topics(cfg)
    rng = random.Random(5)
    engines = [f"engine-{n:05d}" for n in range(ENGINES)]
    execs = sorted(
        (execution(rng, engine, T0 + rng.randrange(2 * WIDTH)) for engine in engines * 4),
        key=lambda e: e["timestamp"],
    )
    worker = WorkerProcess(path, tmp_path).start()
    try:
        producer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "linger.ms": 20})
        topic = cfg.kafka.topic_prefix + "engine-execution"
        for event in execs:
            while True:
                try:
                    producer.produce(topic, orjson.dumps(event))  # no key: every partition
                    break
                except BufferError:
                    producer.poll(0.1)
        # Every partition's stream time past the two windows: they close.
        for p in range(PARTITIONS):
            closer = execution(rng, "closer", T0 + 5 * WIDTH)
            producer.produce(topic, orjson.dumps(closer), partition=p)
            closing = comparison(rng, ["closer"], T0 + 5 * WIDTH)
            producer.produce(
                cfg.kafka.topic_prefix + "comparison-result", orjson.dumps(closing), partition=p
            )
        assert producer.flush(60) == 0
        expected = oracle(execs, [])
        started = time.monotonic()
        lines = wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=240)
        print(f"{len(lines)} windows in {time.monotonic() - started:.0f}s")
        assert worker.proc is not None
        peak = peak_rss_mb(worker.proc.pid)
        print(f"peak RSS {peak:.0f} MB")
        assert peak < RSS_LIMIT_MB
        assert worker.terminate() == 0
    finally:
        worker.kill()
    streamed = by_key(lines_of(cfg, "aggregated_stats"))
    assert set(streamed) == set(expected)
    for key, record in expected.items():
        assert_matches(streamed[key], record)
