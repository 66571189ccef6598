"""A backfill: one batch spanning hundreds of hour buckets flows through (issue 23 item 9).

Executions spread over 300 hourly buckets of last year open 300 files per partition at once:
a checkpoint names them through a manifest (past 24: the offset metadata is capped), fsyncs
them in parallel, and on S3 uploads one pack per partition. Before, a checkpoint could name
24 files, so each took a couple dozen records, and on S3 files still being published held
that limit (a livelock). The worker must neither livelock nor lose or double a line, on files
and on S3.

The rate against the same count in one bucket is printed (`pytest -s -k backfill_over`),
never asserted: it depends on the machine.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from sinks.files.buckets import HOUR_MS, bucket_of
from sinks.files.manifest import INLINE_FILES
from sinks.files.names import IN_PROGRESS_DIR
from sinks.files.part_files import PartitionWriter
from sinks.reader import read_records
from sinks.s3.location import S3Location
from sinks.s3.part_objects import S3PartitionWriter
from sinks.s3.store import store_of
from streams import events
from streams.config import JsonEngineConfig
from streams.topics import consumer_group, create_topics, topic_name
from tests.conftest import ConfigFactory
from tests.workers import WorkerProcess, assert_once, produce

EXECUTIONS = 60_000
YEAR_AGO = (int(time.time() * 1000) - 365 * 24 * HOUR_MS) // HOUR_MS * HOUR_MS


@pytest.fixture(params=["files", "s3"])
def channel(request: pytest.FixtureRequest, tmp_path: Path) -> Path | S3Location:
    if request.param == "s3":
        return S3Location.parse(request.getfixturevalue("s3_base")) / "events"
    return tmp_path / "events"


def writer(where: Path | S3Location, epoch: int) -> PartitionWriter:
    kind = S3PartitionWriter if isinstance(where, S3Location) else PartitionWriter
    return kind(where, 3, epoch, 1 << 30, 3600)  # type: ignore[arg-type]


def hidden(where: Path | S3Location) -> set[str]:
    if isinstance(where, S3Location):
        skip = len((where / IN_PROGRESS_DIR).prefix)
        return {k[skip:] for k, _s in store_of(where).list(where / IN_PROGRESS_DIR)}
    return set(os.listdir(where / IN_PROGRESS_DIR))


def test_past_inline_files_a_checkpoint_names_a_manifest_that_a_new_owner_reads(
    channel: Path | S3Location,
) -> None:
    old = writer(channel, 7)
    old.recover([])
    buckets = [bucket_of(YEAR_AGO + h * HOUR_MS) for h in range(INLINE_FILES + 16)]
    for offset, bucket in enumerate(buckets):
        old.append(b'{"o": %d}\n' % offset, offset, offset, bucket)
    (named,) = old.checkpoints()  # one manifest instead of 40 files
    assert named.is_manifest and named.last == len(buckets) - 1
    assert old.checkpoints() == [named]  # the same files: the same manifest
    old.sync()
    old.committed()  # all of them got lines: all stay open
    old.abandon()  # the worker dies here; the committed checkpoint names the manifest

    new = writer(channel, 8)
    new.recover([named])
    assert [r["o"] for r in read_records(channel)] == list(range(len(buckets)))
    assert named.file in hidden(channel)  # the claim names it too: kept
    new.append(b'{"o": 99}\n', 99, 99, buckets[0])
    assert len(new.checkpoints()) == 1  # inline again
    new.sync()
    new.committed()
    new.collect()
    deadline = time.monotonic() + 10  # on S3 it goes in the background
    while named.file in hidden(channel) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert named.file not in hidden(channel)
    with pytest.raises(OSError, match="missing"):
        writer(channel, 9).recover([named])


def committed(cfg: JsonEngineConfig) -> int:
    """Records of the execution topic the workers' group has committed."""
    topic = topic_name(cfg, "engine_execution")
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": consumer_group(cfg, topic),
            "isolation.level": "read_committed",
        }
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(cfg.kafka.partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


def run(make_config: ConfigFactory, tmp_path: Path, output: dict, hours: int) -> float:
    """Executions spread over `hours` hourly buckets of last year, in random order, through
    one worker started on the full topic; returns executions per second (from its partitions
    recovered to the last commit)."""
    name = f"h{hours}"
    path, cfg = make_config(
        {
            "kafka": {"topic_prefix": f"test-{uuid.uuid4().hex[:10]}-{name}."},
            "output": output if output else {"base_path": str(tmp_path / name)},
            "aggregation": {"enabled": False},
            "training": {"enabled": False},
            "channels": {"engine_execution": {"roll_seconds": 300.0}},  # the default
        },
        name=f"{name}.yaml",
    )
    create_topics(cfg)
    rng = random.Random(hours)
    execs = [
        events.engine_execution(rng, f"e{i % 8}", YEAR_AGO + rng.randrange(hours) * HOUR_MS + i)
        for i in range(EXECUTIONS)
    ]
    produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs])
    worker = WorkerProcess(path, tmp_path, name).start(wait_ready=False)
    try:
        deadline = time.monotonic() + 120
        while b"ready: reading" not in worker.log():  # joined, partitions recovered
            assert worker.alive() and time.monotonic() < deadline, worker.tail()
            time.sleep(0.02)
        started = time.monotonic()
        deadline = started + 600
        while (done := committed(cfg)) < EXECUTIONS:
            assert worker.alive(), worker.tail()
            assert time.monotonic() < deadline, f"{done} of {EXECUTIONS} after 600s"
            time.sleep(0.05)
        seconds = time.monotonic() - started
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    assert_once(cfg, execs)
    return EXECUTIONS / seconds


@pytest.mark.slow
@pytest.mark.parametrize("output", ["files", "s3"])
def test_a_backfill_over_300_hours_lands_exactly_once(
    make_config: ConfigFactory, tmp_path: Path, output: str, request: pytest.FixtureRequest
) -> None:
    rates = {}
    for hours in (1, 300):
        shared = {}
        if output == "s3":
            shared = {"base_path": f"{request.getfixturevalue('s3_base')}/h{hours}"}
        rates[hours] = run(make_config, tmp_path, shared, hours)
    print(
        f"\nbackfill on {output}: {EXECUTIONS} executions, one bucket {rates[1]:,.0f}/s, "
        f"300 buckets {rates[300]:,.0f}/s ({rates[300] / rates[1]:.2f}x)"
    )
