"""The worker writing to S3 (versitygw, or AWS_ENDPOINT_URL): every channel once, objects
laid out as the files are, nothing hidden left after a graceful stop, the worker's own
readers and the reader API agreeing with what was published."""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson

from sinks.s3.location import S3Location
from streams import events
from streams.publisher import Publisher
from streams.topics import create_topics
from tests.conftest import ConfigFactory, S3Service
from tests.workers import WorkerProcess, produce, records, wait_for_lines


def keys(s3: S3Service, base: str) -> list[str]:
    where = S3Location.parse(base)
    pages = (
        s3.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=where.bucket, Prefix=where.prefix)
    )
    return sorted(o["Key"][len(where.prefix) :] for p in pages for o in p.get("Contents", ()))


def test_every_channel_once_on_s3_and_nothing_hidden_after_a_stop(
    make_config: ConfigFactory, tmp_path: Path, s3_base: str, s3_service: S3Service
) -> None:
    path, cfg = make_config({"output": {"base_path": s3_base}, "training": {"enabled": False}})
    create_topics(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    rng = random.Random(5)
    now = int(time.time() * 1000)
    execs = [events.engine_execution(rng, f"e{i % 5}", now + i) for i in range(3000)]
    samples = [events.training_sample(rng, now + i) for i in range(100)]
    with Publisher(cfg) as publisher:
        for e in execs:
            publisher.collect_engine_execution(e)
        for s in samples:
            publisher.collect_training_sample(s)
    produce(cfg, "engine-execution", [b"not json", b"[1]"])
    got = wait_for_lines(cfg, "engine_execution", len(execs))
    assert sorted(r["trace_id"] for r in records(got)) == sorted(e["trace_id"] for e in execs)
    assert len(wait_for_lines(cfg, "training_sample", 100)) == 100
    assert len(wait_for_lines(cfg, "dead_letter", 2)) == 2
    assert worker.terminate() == 0
    listed = keys(s3_service, s3_base)
    assert listed, "no objects"
    for key in listed:
        segments = key.split("/")
        assert not any(s.startswith(".") for s in segments), f"left hidden: {key}"
        assert segments[0] in {"events", "training_samples", "rejected", "aggregated_stats"}
        assert segments[1].startswith("date=") and segments[2].startswith("hour=")
        assert key.endswith(".jsonl")
    body = (
        s3_service.client()
        .get_object(
            Bucket=S3Location.parse(s3_base).bucket,
            Key=f"{S3Location.parse(s3_base).key}/{listed[0]}",
        )["Body"]
        .read()
    )
    assert body.endswith(b"\n") and all(orjson.loads(line) for line in body.splitlines())
