"""Copies counted once by the data alone (streams/readers/dedupe.py): a backfill of last
year replayed twice with a SIGKILL, on files and on S3, whenever it runs; samples republished
by clients with other partitioners."""

from __future__ import annotations

import random
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from streams.readers.dedupe import home_partition
from streams.topics import PARTITIONER, create_topics
from streams.training import derive_sample
from tests.conftest import ConfigFactory
from tests.test_aggregator import comparison
from tests.workers import WorkerProcess, lines_of, records, wait_for_lines

PARTITIONS = 3
HOUR_MS = 3_600_000
FAST = {
    c: {"auto_flush_seconds": 0.2, "roll_seconds": 0.5}
    for c in ("comparison_result", "training_sample")
}
CONFIG = {
    "kafka": {"partitions": PARTITIONS},
    "aggregation": {"enabled": False},
    "channels": FAST,
}


def send(
    cfg: Any, suffix: str, values: list[bytes], keys: list[bytes | None], partitioner: str
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "partitioner": partitioner,
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    for value, key in zip(values, keys, strict=True):
        producer.produce(cfg.kafka.topic_prefix + suffix, value, key)
    assert producer.flush(60) == 0


def scored(rng: random.Random, ts: int) -> dict[str, Any]:
    """A comparison that makes a training sample (winner score at least bronze)."""
    cmp = comparison(rng, ["e0", "e1", "e2"], ts)
    cmp["winner"]["score"] = round(0.5 + rng.random() / 2, 3)
    return cmp


@pytest.mark.slow
@pytest.mark.parametrize("output", ["files", "s3"])
def test_a_backfill_of_last_year_replayed_twice_with_a_sigkill_makes_each_sample_once(
    make_config: ConfigFactory, tmp_path: Path, output: str, request: pytest.FixtureRequest
) -> None:
    """The horizon of the sample dedupe is the partition's stream time, committed with its
    offsets: comparisons of a year ago, replayed, are as idempotent as live ones. (With a
    wall-clock horizon, every replayed sample was written again.)"""
    shared = {"base_path": request.getfixturevalue("s3_base")} if output == "s3" else {}
    path, cfg = make_config({**CONFIG, "output": shared})
    create_topics(cfg)
    rng = random.Random(7)
    year_ago = (int(time.time() * 1000) - 365 * 24 * HOUR_MS) // HOUR_MS * HOUR_MS
    cmps = sorted(
        (scored(rng, year_ago + rng.randrange(12 * HOUR_MS)) for _ in range(300)),
        key=lambda c: c["timestamp"],
    )
    values = [orjson.dumps(c) for c in cmps]
    keys = [c["comparison_id"].encode() for c in cmps]
    worker = WorkerProcess(path, tmp_path).start()
    try:
        send(cfg, "comparison-result", values, keys, PARTITIONER)
        wait_for_lines(cfg, "training_sample", 100, timeout=60)
        worker.kill()  # SIGKILL in the middle of the first pass
        worker.start()
        send(cfg, "comparison-result", values, keys, PARTITIONER)  # the backfill again
        samples = wait_for_lines(cfg, "training_sample", len(cmps), timeout=120)
        time.sleep(3)  # anything doubled would be here by now
        samples = lines_of(cfg, "training_sample")
        assert worker.terminate() == 0
    finally:
        worker.kill()
    sources = [s["source_trace_id"] for s in records(samples)]
    assert sorted(sources) == sorted(c["comparison_id"] for c in cmps)
    # The comparisons' copies met in their partition (same key, same client): one line each.
    lines = [c["comparison_id"] for c in records(lines_of(cfg, "comparison_result"))]
    assert sorted(lines) == sorted(c["comparison_id"] for c in cmps)


@pytest.mark.slow
def test_samples_republished_with_other_partitioners_are_one_line_each(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """The deriver publishes each sample to the murmur2 home of its id; a client that sends
    the same samples again with librdkafka's default partitioner, or without a key, lands
    them elsewhere: they are forwarded home and meet their first copy there."""
    path, cfg = make_config(CONFIG)
    create_topics(cfg)
    rng = random.Random(11)
    now = int(time.time() * 1000)
    cmps = [scored(rng, now - 60_000 + i) for i in range(120)]
    samples = [derive_sample(c, cfg.training.thresholds) for c in cmps]
    # librdkafka's consistent partitioner is crc32 of the key: most land away from home.
    away = [
        s
        for s in samples
        if zlib.crc32(s["sample_id"].encode()) % PARTITIONS
        != home_partition(s["sample_id"].encode(), PARTITIONS)
    ]
    assert len(away) > len(samples) / 3
    worker = WorkerProcess(path, tmp_path).start()
    try:
        send(
            cfg,
            "comparison-result",
            [orjson.dumps(c) for c in cmps],
            [c["comparison_id"].encode() for c in cmps],
            PARTITIONER,
        )
        wait_for_lines(cfg, "training_sample", len(samples), timeout=60)
        values = [orjson.dumps(s) for s in samples]
        ids = [s["sample_id"].encode() for s in samples]
        send(cfg, "training-sample", values, ids, "consistent_random")
        send(cfg, "training-sample", values, [None] * len(values), "consistent_random")
        # And a sample only ever sent by a client, twice, both times away from home.
        extra = dict(samples[0], sample_id="external-only", source_trace_id="external")
        send(cfg, "training-sample", [orjson.dumps(extra)] * 2, [None, None], "random")
        wait_for_lines(cfg, "training_sample", len(samples) + 1, timeout=60)
        time.sleep(4)  # the forwarded copies have come home by now
        lines = lines_of(cfg, "training_sample")
        assert worker.terminate() == 0
    finally:
        worker.kill()
    got = [s["sample_id"] for s in records(lines)]
    assert sorted(got) == sorted([s["sample_id"] for s in samples] + ["external-only"])
    # Each line sits in its id's home partition: the files are named by it.
    homes = {
        int(p.name.split("-")[0][1:])
        for p in (cfg.output.base_path / "training_samples").rglob("p*.jsonl")
    }
    assert homes <= {home_partition(i.encode(), PARTITIONS) for i in got}
