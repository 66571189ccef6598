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


def test_files_finishing_together_hold_at_most_the_upload_budget_in_memory(
    s3_base: str, tmp_path: Path
) -> None:
    """Adversary: many finished files published at once (an hour's buckets closing on every
    partition), on the sink's own upload pool. The bytes read into memory for their PUTs
    never pass the store's budget, except one file larger than it, which goes alone; every
    object lands whole."""
    from contextlib import contextmanager

    from sinks.s3.store import store_of
    from sinks.s3.uploads import ByteBudget

    class Watched(ByteBudget):
        def __init__(self, limit: int):
            super().__init__(limit)
            self.peak = 0
            self.over: list[tuple[int, int]] = []

        @contextmanager
        def hold(self, size: int):  # type: ignore[no-untyped-def]
            with super().hold(size):
                self.peak = max(self.peak, self.held)
                if self.held > self.limit and self.held != size:
                    self.over.append((self.held, size))
                yield

    base = S3Location.parse(s3_base) / "budget"
    store = store_of(base)
    rng = random.Random(4)
    sizes = [1_000_000] * 12 + [5_000_000]
    rng.shuffle(sizes)
    contents = {f"f{n}.jsonl": rng.randbytes(size) for n, size in enumerate(sizes)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    budget = Watched(3_000_000)
    kept, store.uploads.memory = store.uploads.memory, budget
    try:

        def publish(name: str) -> bool:
            with open(tmp_path / name, "rb") as body:
                return store.put_new(base / name, body)

        assert all(f.result() for f in [store.pool.submit(publish, n) for n in contents])
    finally:
        store.uploads.memory = kept
    assert budget.over == [], "files held beside one another past the budget"
    assert budget.peak <= 3_000_000 or budget.peak == 5_000_000
    assert budget.peak >= 2_000_000, "the uploads never overlapped: the budget was not tried"
    for name, data in contents.items():
        assert store.get(base / name) == data
