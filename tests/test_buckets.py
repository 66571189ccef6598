"""Time buckets: readers that prune, retention of whole buckets, dedupe within a horizon,
exactly once across an hour boundary under SIGKILL, and the upgrade from the flat layout."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from sinks.files.buckets import HOUR_MS, bucket_of, event_time, parse_time
from sinks.files.names import IN_PROGRESS_DIR, finished_name
from sinks.files.retention import delete_before
from sinks.reader import channel_dir, read_records
from streams import events
from streams.topics import create_topics
from tests.conftest import ConfigFactory
from tests.workers import WorkerProcess, lines_of, produce, records, wait_for_lines

AN_HOUR = 1_764_000_000_000  # 2025-11-24 16:00:00 UTC, an hour boundary (in the past:
# later times are dead-lettered as `future` by the worker)


def write_part(directory: Path, bucket: str | None, partition: int, first: int, lines: list[dict]):
    folder = directory / bucket if bucket else directory
    folder.mkdir(parents=True, exist_ok=True)
    name = finished_name(partition, first, first + len(lines) - 1)
    (folder / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))


def test_buckets_and_time_parsing() -> None:
    assert bucket_of(AN_HOUR) == "date=2025-11-24/hour=16"
    assert bucket_of(AN_HOUR - 1) == "date=2025-11-24/hour=15"
    assert parse_time("2025-11-24T16:00:00Z") == AN_HOUR == parse_time(str(AN_HOUR))
    assert event_time({"created_at": 5}) == 5 and event_time({"x": 1}) is None
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")


def test_readers_with_and_without_bounds_give_the_same_lines_for_the_range(tmp_path: Path) -> None:
    rng = random.Random(3)
    rows = [
        {"timestamp": AN_HOUR + rng.randrange(-5 * HOUR_MS, 5 * HOUR_MS), "i": i}
        for i in range(500)
    ]
    for i in range(0, 500, 50):
        chunk = rows[i : i + 50]
        by_bucket: dict[str, list[dict]] = {}
        for r in chunk:
            by_bucket.setdefault(bucket_of(r["timestamp"]), []).append(r)
        for n, (bucket, lines) in enumerate(sorted(by_bucket.items())):
            write_part(tmp_path, bucket, i % 3, i * 100 + n * 60, lines)
    write_part(tmp_path, None, 2, 10**9, [{"timestamp": AN_HOUR + 10, "i": "flat"}])  # older layout
    everything = read_records(tmp_path)
    assert len(everything) == 501
    for since, until in (
        (AN_HOUR - 2 * HOUR_MS + 17, AN_HOUR + 3 * HOUR_MS - 5),
        (AN_HOUR, None),
        (None, AN_HOUR),
    ):
        want = [
            r
            for r in everything
            if (since is None or r["timestamp"] >= since)
            and (until is None or r["timestamp"] < until)
        ]
        assert read_records(tmp_path, since, until) == want


def test_retention_deletes_whole_old_buckets_never_one_still_written(tmp_path: Path) -> None:
    old, busy, recent = (bucket_of(AN_HOUR - h * HOUR_MS) for h in (72, 71, 1))
    write_part(tmp_path, old, 0, 0, [{"timestamp": AN_HOUR - 72 * HOUR_MS}])
    write_part(tmp_path, busy, 0, 1, [{"timestamp": AN_HOUR - 71 * HOUR_MS}])
    write_part(tmp_path, recent, 0, 2, [{"timestamp": AN_HOUR - HOUR_MS}])
    spool = tmp_path / IN_PROGRESS_DIR
    spool.mkdir()
    code = busy.replace("date=", "").replace("/hour=", "").replace("-", "")
    (spool / f"p000-0000000003-000000000003-{code}.part").write_bytes(b"{}\n")
    started = time.perf_counter()
    assert delete_before(tmp_path, AN_HOUR - 24 * HOUR_MS) == 1
    assert time.perf_counter() - started < 1
    assert not (tmp_path / old).exists()
    assert [r["timestamp"] for r in read_records(tmp_path)] == [
        AN_HOUR - 71 * HOUR_MS,
        AN_HOUR - HOUR_MS,
    ]


def sample(created_at: int, sample_id: str | None = None) -> dict[str, Any]:
    return {
        "sample_id": sample_id or str(uuid.uuid4()),
        "created_at": created_at,
        "source_trace_id": "external",
        "tier": "gold",
        "input": "q",
        "output": "a",
        "validation": {"quality_score": 0.95, "validated": True},
    }


@pytest.mark.slow
def test_duplicates_within_the_horizon_once_beyond_it_kept(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            "output": {"dedupe_horizon_hours": 2},
            "aggregation": {"enabled": False},
            "training": {"enabled": False},
        }
    )
    create_topics(cfg)
    now = int(time.time() * 1000)
    recent = [sample(now - 10 * 60_000) for _ in range(20)]
    old = [sample(now - 5 * HOUR_MS) for _ in range(20)]  # beyond the 2 h horizon
    worker = WorkerProcess(path, tmp_path).start()
    values = [orjson.dumps(s) for s in recent + old]
    keys = [s["sample_id"].encode() for s in recent + old]
    produce(cfg, "training-sample", values, keys)
    wait_for_lines(cfg, "training_sample", 40)
    assert worker.terminate() == 0
    worker.start()  # a fresh worker: what it knows of the first copies is in the files
    produce(cfg, "training-sample", values, keys)  # the same samples, sent again by someone
    time.sleep(4)
    lines = wait_for_lines(cfg, "training_sample", 60, timeout=20)
    assert worker.terminate() == 0
    ids = [r["sample_id"] for r in records(lines)]
    assert sorted(ids) == sorted(
        [s["sample_id"] for s in recent] + 2 * [s["sample_id"] for s in old]
    )


def bucket_matches(base: Path, channel_file: str) -> None:
    """Every line sits in the bucket of its own event time."""
    directory = channel_dir(base, channel_file)
    for path in directory.rglob("*.jsonl"):
        if path.parent == directory:
            continue
        bucket = f"{path.parent.parent.name}/{path.parent.name}"
        for line in path.read_bytes().splitlines():
            assert bucket_of(event_time(orjson.loads(line))) == bucket, path


@pytest.mark.slow
def test_sigkill_across_an_hour_boundary_loses_and_duplicates_nothing(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            "aggregation": {"enabled": False},
            "training": {"enabled": False},
            "channels": {"engine_execution": {"buffer_size": 300, "auto_flush_seconds": 0.2}},
        }
    )
    create_topics(cfg)
    rng = random.Random(4)
    # Each batch holds records of both hours: the clock of the producers straddles 08:00.
    execs = [
        events.engine_execution(
            rng, f"e{i % 5}", AN_HOUR - 30_000 + i * 5 + rng.randrange(-800, 800)
        )
        for i in range(12_000)
    ]
    worker = WorkerProcess(path, tmp_path).start()

    def publish() -> None:
        for start in range(0, len(execs), 1000):
            produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs[start : start + 1000]])
            time.sleep(0.3)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        for _ in range(3):
            time.sleep(rng.uniform(0.8, 2.0))
            worker.kill()
            worker.start()
        publisher.join()
        lines = wait_for_lines(cfg, "engine_execution", len(execs), timeout=120)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    ids = [r["trace_id"] for r in records(lines)]
    assert len(ids) == len(set(ids)) and set(ids) == {e["trace_id"] for e in execs}
    bucket_matches(cfg.output.base_path, "events.jsonl")
    folders = {
        p.parent.name for p in channel_dir(cfg.output.base_path, "events.jsonl").rglob("*.jsonl")
    }
    assert folders == {"hour=15", "hour=16"}


@pytest.mark.slow
def test_a_worker_upgraded_on_the_flat_layout_carries_on_exactly_once(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            "kafka": {"partitions": 1},
            "aggregation": {"enabled": False},
            "training": {"enabled": False},
        }
    )
    create_topics(cfg)
    rng = random.Random(9)
    execs = [events.engine_execution(rng, "e", AN_HOUR + i) for i in range(100)]
    values = [orjson.dumps(e) for e in execs]
    produce(cfg, "engine-execution", values)
    # What the version before fenced checkpoints left: finished files of offsets 0-49 in the
    # channel folder itself, a checkpointed in-progress file of 50-59 with a torn tail, and a
    # committed offset (without our metadata) behind what the files prove.
    directory = channel_dir(cfg.output.base_path, "events.jsonl")
    directory.mkdir(parents=True)
    (directory / finished_name(0, 0, 49)).write_bytes(b"".join(v + b"\n" for v in values[:50]))
    body = b"".join(v + b"\n" for v in values[50:60])
    (directory / f".p000-000000000050-000000000059-{len(body)}.inprogress").write_bytes(
        body + values[60][:20]
    )
    consumer = Consumer(
        {"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": cfg.kafka.app_id}
    )
    topic = cfg.kafka.topic_prefix + "engine-execution"
    consumer.commit(offsets=[TopicPartition(topic, 0, 40)], asynchronous=False)
    consumer.close()
    worker = WorkerProcess(path, tmp_path).start()
    lines = wait_for_lines(cfg, "engine_execution", 100, timeout=60)
    assert worker.terminate() == 0
    assert [orjson.loads(x)["trace_id"] for x in lines] == [e["trace_id"] for e in execs]
    assert lines_of(cfg, "engine_execution") == lines


@pytest.mark.slow
def test_retention_under_load_deletes_only_old_buckets(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            "output": {"retention_days": 1, "retention_check_seconds": 1},
            "aggregation": {"enabled": False},
            "training": {"enabled": False},
        }
    )
    create_topics(cfg)
    rng = random.Random(5)
    now = int(time.time() * 1000)
    old = [events.engine_execution(rng, "e", now - 3 * 24 * HOUR_MS + i) for i in range(300)]
    fresh = [events.engine_execution(rng, "e", now - 60_000 + i) for i in range(3000)]
    worker = WorkerProcess(path, tmp_path).start()
    try:
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in old])
        for start in range(0, len(fresh), 300):  # load goes on while retention runs
            chunk = fresh[start : start + 300]
            produce(cfg, "engine-execution", [orjson.dumps(e) for e in chunk])
            time.sleep(0.3)
        directory = channel_dir(cfg.output.base_path, "events.jsonl")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            days = {p.parent.parent.name for p in directory.rglob("*.jsonl")}
            if days == {bucket_of(now - 60_000).split("/")[0]} and len(
                lines_of(cfg, "engine_execution")
            ) >= len(fresh):
                break
            time.sleep(0.5)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    ids = [r["trace_id"] for r in records(lines_of(cfg, "engine_execution"))]
    assert sorted(ids) == sorted(e["trace_id"] for e in fresh)  # the old bucket went, whole
    assert b"retention: deleted" in worker.log()
