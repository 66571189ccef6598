"""The zombie on S3: a worker frozen (SIGSTOP) past the session timeout at each risky instant,
its partitions taken over by another worker, then thawed with its batches (or its recovery)
in hand. As on the filesystem (tests/test_zombie.py), every channel keeps every record in
exactly one visible line, and no visible object is rewritten or removed after the thaw: the
zombie's part objects are in its own fenced epoch and never counted, and its conditional
PUTs cannot replace a key."""

from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import pytest

from streams.topics import create_topics
from tests.conftest import ConfigFactory, S3Service
from tests.test_aggregator import AGG, FAST, assert_matches, by_key, oracle
from tests.test_s3_exactly_once import objects, visible
from tests.test_zombie import Feed, assert_exactly_once, wait_all
from tests.workers import WorkerProcess, lines_of, wait_for_lines


@pytest.mark.slow
@pytest.mark.parametrize(
    "instant",
    ["before_write:stop:2", "after_write:stop:2", "after_commit:stop:2", "after_claim:stop:1"],
)
def test_a_thawed_zombie_never_makes_an_object_visible_twice(
    make_config: ConfigFactory,
    tmp_path: Path,
    s3_base: str,
    s3_service: S3Service,
    instant: str,
) -> None:
    path, cfg = make_config(
        {
            "output": {"base_path": s3_base},
            "kafka": {"partitions": 3},
            "aggregation": {**AGG, "idle_seconds": 300},
            "channels": {**FAST, "training_sample": FAST["engine_execution"]},
        }
    )
    create_topics(cfg)
    client = s3_service.client()
    feed = Feed(cfg, seed=zlib.crc32(instant.encode()))
    first = WorkerProcess(path, tmp_path, "w0").start()  # leaves committed parts (SIGKILL)
    feed.send()
    wait_all(cfg, feed)
    first.kill()

    zombie = WorkerProcess(path, tmp_path, "zombie", env={"JSON_ENGINE_FAULT": instant})
    zombie.start(wait_ready=False)
    stop_feeding = threading.Event()

    def keep_feeding() -> None:
        while not stop_feeding.is_set():
            feed.send(150)
            time.sleep(0.3)

    feeder = threading.Thread(target=keep_feeding)
    feeder.start()
    try:
        zombie.wait_frozen(90)
    finally:
        stop_feeding.set()
        feeder.join()
    owner = WorkerProcess(path, tmp_path, "owner").start()
    feed.send()
    wait_all(cfg, feed, timeout=150)
    before = visible(objects(client, s3_base))

    try:
        zombie.thaw()
        time.sleep(8)
        feed.send()
        feed.close_windows()
        wait_all(cfg, feed, timeout=150)
        expected = oracle(feed.execs, feed.cmps)
        wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=120)
        assert zombie.alive(), zombie.tail()
        assert b"partitions (session expired)" in zombie.log()
        assert owner.terminate() == 0
        assert zombie.terminate() == 0
    finally:
        owner.kill()
        zombie.thaw()
        zombie.kill()

    after = visible(objects(client, s3_base))
    for key, identity in before.items():
        assert after.get(key) == identity, f"{key} was rewritten or removed"
    assert_exactly_once(cfg, feed)
    streamed = by_key(lines_of(cfg, "aggregated_stats"))
    assert set(streamed) == set(expected)
    for key, record in streamed.items():
        assert_matches(record, expected[key])
    hours = {k.split("/")[2] for k in after if k.startswith("events/")}
    assert hours == {"hour=07", "hour=08"}  # the feed crossed an hour
