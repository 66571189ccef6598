"""The zombie: a worker frozen (SIGSTOP) past the session timeout at each risky instant,
its partitions taken over by another worker, then thawed with its batches in hand.

Every channel must keep every record in exactly one finished line: executions, comparisons,
training samples (derived and published), dead letters and aggregated stats. No finished file
may be rewritten after the thaw, and the zombie must rejoin (or stop) cleanly. The same on
S3 (`output: s3`): the zombie's part objects are in its own fenced epoch and never counted,
and its conditional PUTs cannot replace a key.
"""

from __future__ import annotations

import os
import random
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from sinks.files.names import FINISHED
from sinks.reader import channel_dir
from sinks.s3.location import S3Location
from sinks.s3.store import store_of
from streams.config import CHANNELS
from streams.topics import create_topics
from streams.training import derive_sample
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
    publish,
)
from tests.workers import WorkerProcess, lines_of, produce, records, wait_for_lines

ENGINES = [f"e{i}" for i in range(5)]
LOST = b"partitions (session expired)"  # the worker's log line when it finds it was a zombie


class Feed:
    """Rounds of events in time order: executions, comparisons, samples and invalid records."""

    def __init__(self, cfg: Any, seed: int):
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.execs: list[dict] = []
        self.cmps: list[dict] = []
        self.samples: list[dict] = []
        self.closers: list[dict] = []  # far ahead: they move stream time, their windows stay open
        self.closing_cmps: list[dict] = []
        self.invalid = 0
        self.round = 0

    def send(self, executions: int = 300) -> None:
        # From 12 s before an hour on: the rounds straddle a bucket boundary.
        rng, base = self.rng, T0 - 4 * WIDTH + self.round * 2 * WIDTH
        self.round += 1
        execs = sorted(
            (
                execution(rng, rng.choice(ENGINES), base + rng.randrange(2 * WIDTH))
                for _ in range(executions)
            ),
            key=lambda e: e["timestamp"],
        )
        cmps = sorted(
            (comparison(rng, ENGINES, base + rng.randrange(2 * WIDTH)) for _ in range(20)),
            key=lambda c: c["timestamp"],
        )
        samples = [
            {
                "sample_id": f"direct-{rng.getrandbits(64):016x}",
                "created_at": base,
                "source_trace_id": "external",
                "tier": "gold",
                "input": "q",
                "output": "a",
                "validation": {"quality_score": 0.95, "validated": True},
            }
            for _ in range(5)
        ]
        publish(self.cfg, execs, cmps)
        produce(self.cfg, "training-sample", [orjson.dumps(s) for s in samples])
        produce(self.cfg, "engine-execution", [b"not json", b'{"engine_id": 3}'])
        self.execs += execs
        self.cmps += cmps
        self.samples += samples
        self.invalid += 2

    def close_windows(self) -> None:
        """Stream time moves past every window on every partition of both inputs (windows
        close by stream time alone: no input goes idle during the test)."""
        ts = T0 - 4 * WIDTH + (self.round + 3) * 2 * WIDTH
        partitions = range(self.cfg.kafka.partitions)
        self.closers = [execution(self.rng, "e0", ts) for _ in partitions]
        self.closing_cmps = [comparison(self.rng, ENGINES, ts) for _ in partitions]
        producer = Producer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers})
        prefix = self.cfg.kafka.topic_prefix
        for p, e, c in zip(partitions, self.closers, self.closing_cmps, strict=True):
            producer.produce(f"{prefix}engine-execution", orjson.dumps(e), partition=p)
            producer.produce(f"{prefix}comparison-result", orjson.dumps(c), partition=p)
        assert producer.flush(30) == 0

    def expected_samples(self) -> set[str]:
        derived = {
            s["sample_id"]
            for c in self.cmps + self.closing_cmps
            if (s := derive_sample(c, self.cfg.training.thresholds)) is not None
        }
        return derived | {s["sample_id"] for s in self.samples}


def finished_files(base: Path | S3Location) -> dict[str, tuple[object, int]]:
    """Every finished part file: path → (inode, size); an object: key → (ETag, size)."""
    if isinstance(base, S3Location):
        from tests.test_s3_exactly_once import objects, visible

        return visible(objects(store_of(base).client, str(base)))  # type: ignore[return-value]
    found: dict[str, tuple[object, int]] = {}
    for path in base.rglob("*.jsonl*"):
        if FINISHED.match(path.name) and not any(
            part.startswith(".") for part in path.relative_to(base).parts
        ):
            st = path.stat()
            found[str(path.relative_to(base))] = (st.st_ino, st.st_size)
    return found


def wait_all(cfg: Any, feed: Feed, timeout: float = 120) -> None:
    wait_for_lines(cfg, "engine_execution", len(feed.execs) + len(feed.closers), timeout)
    wait_for_lines(cfg, "comparison_result", len(feed.cmps) + len(feed.closing_cmps), timeout)
    wait_for_lines(cfg, "training_sample", len(feed.expected_samples()), timeout)
    wait_for_lines(cfg, "dead_letter", feed.invalid, timeout)


def assert_exactly_once(cfg: Any, feed: Feed) -> None:
    traces = [r["trace_id"] for r in records(lines_of(cfg, "engine_execution"))]
    assert len(traces) == len(set(traces))
    assert set(traces) == {e["trace_id"] for e in feed.execs + feed.closers}
    cmps = [r["comparison_id"] for r in records(lines_of(cfg, "comparison_result"))]
    assert sorted(cmps) == sorted(c["comparison_id"] for c in feed.cmps + feed.closing_cmps)
    samples = [r["sample_id"] for r in records(lines_of(cfg, "training_sample"))]
    assert len(samples) == len(set(samples))
    assert set(samples) == feed.expected_samples()
    dead = [
        (r["topic"], r["partition"], r["offset"]) for r in records(lines_of(cfg, "dead_letter"))
    ]
    assert len(dead) == len(set(dead)) == feed.invalid


@pytest.mark.slow
@pytest.mark.parametrize("output", ["files", "s3"])
@pytest.mark.parametrize(
    "instant",
    ["before_write:stop:2", "after_write:stop:2", "after_commit:stop:2", "after_claim:stop:1"],
)
def test_a_thawed_zombie_never_makes_a_line_visible_twice(
    make_config: ConfigFactory,
    tmp_path: Path,
    instant: str,
    output: str,
    request: pytest.FixtureRequest,
) -> None:
    thawed_zombie(make_config, tmp_path, instant, output, request, "none")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("output", "compression", "instant"),
    [("files", "zstd", "after_write:stop:2"), ("s3", "gzip", "after_commit:stop:2")],
)
def test_a_thawed_zombie_on_compressed_channels(
    make_config: ConfigFactory,
    tmp_path: Path,
    instant: str,
    output: str,
    compression: str,
    request: pytest.FixtureRequest,
) -> None:
    """The zombie with every channel compressed (issue 27): its frames appended after the
    owner's roll-forward reach no finished file, and every file is whole frames."""
    thawed_zombie(make_config, tmp_path, instant, output, request, compression)


def thawed_zombie(
    make_config: ConfigFactory,
    tmp_path: Path,
    instant: str,
    output: str,
    request: pytest.FixtureRequest,
    compression: str,
) -> None:
    shared = {"base_path": request.getfixturevalue("s3_base")} if output == "s3" else {}
    channels = {**FAST, "training_sample": FAST["engine_execution"]}
    if compression != "none":
        channels = {
            name: {**channels.get(name, {}), "compression": compression} for name in CHANNELS
        }
    path, cfg = make_config(
        {
            "output": shared,
            "kafka": {"partitions": 3},
            "aggregation": {**AGG, "idle_seconds": 300},
            "channels": channels,
        }
    )
    create_topics(cfg)
    feed = Feed(cfg, seed=zlib.crc32(instant.encode()))
    # A first worker leaves committed in-progress files behind (SIGKILL): something to roll
    # forward for whoever takes the partitions next.
    first = WorkerProcess(path, tmp_path, "w0").start()
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
    wait_all(cfg, feed, timeout=150)  # the owner took every partition over, and wrote it all
    before = finished_files(cfg.output.base_path)

    try:
        zombie.thaw()  # it wakes with its batches (or its recovery) in hand
        # It acts on them first: only its next poll tells it the partitions are gone.
        zombie.wait_for(LOST, 60)
        feed.send()
        feed.close_windows()
        wait_all(cfg, feed, timeout=150)
        expected = oracle(feed.execs, feed.cmps)
        wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=120)
        assert zombie.alive(), zombie.tail()
        assert owner.terminate() == 0
        assert zombie.terminate() == 0
    finally:
        owner.kill()
        zombie.thaw()
        zombie.kill()

    after = finished_files(cfg.output.base_path)
    for name, identity in before.items():
        assert after.get(name) == identity, f"{name} was rewritten or removed"
    ending = {"none": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}[compression]
    assert after and all(name.endswith(ending) for name in after)
    assert_exactly_once(cfg, feed)
    streamed = by_key(lines_of(cfg, "aggregated_stats"))
    assert set(streamed) == set(expected)
    for key, record in streamed.items():
        assert_matches(record, expected[key])
    hours = {name.split("/")[-2] for name in after if name.startswith("events/")}
    assert hours == {"hour=15", "hour=16"}  # the feed crossed an hour
    if output == "s3":
        return  # no spool to look at: a roll-forward is one conditional PUT
    for channel in ("engine_execution", "training_sample", "dead_letter"):
        spool = channel_dir(cfg.output.base_path, cfg.channels.get(channel).filename)
        for name in os.listdir(spool / ".inprogress"):
            assert not name.endswith(".copy"), name  # no half roll-forward left behind


@pytest.mark.slow
def test_a_zombie_frozen_past_idle_seconds_hands_nothing_over_twice(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """An idle input's hand-over (partials and marks, no offset moved) is fenced too: frozen
    right before its transaction, thawed after the owner handed the same partials over, the
    zombie's transaction is refused. Unfenced, the merge got the partials twice."""
    path, cfg = make_config(
        {
            "kafka": {"partitions": 3},
            "aggregation": {**AGG, "idle_seconds": 2},
            "channels": FAST,
            "training": {"enabled": False},
        }
    )
    create_topics(cfg)
    rng = random.Random(41)
    engines = [f"e{i}" for i in range(12)]  # keyed by engine: every partition has some
    execs = sorted(
        (execution(rng, rng.choice(engines), T0 + rng.randrange(4 * WIDTH)) for _ in range(300)),
        key=lambda e: e["timestamp"],
    )
    cmps = [comparison(rng, engines, T0 + rng.randrange(4 * WIDTH)) for _ in range(30)]
    cmps.sort(key=lambda c: c["timestamp"])
    zombie = WorkerProcess(
        path, tmp_path, "zombie", env={"JSON_ENGINE_FAULT": "idle_handover:stop:1"}
    ).start()
    owner = WorkerProcess(path, tmp_path, "owner")
    try:
        publish(cfg, execs, cmps)
        # One partition far ahead: once every input is idle, its mark closes the last
        # windows, which the others hand over only then (their idle hand-over).
        ahead = execution(rng, "e0", T0 + 10 * WIDTH)
        closer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers})
        closer.produce(
            cfg.kafka.topic_prefix + "engine-execution", orjson.dumps(ahead), partition=0
        )
        assert closer.flush(30) == 0
        zombie.wait_frozen(60)  # read everything, went idle, froze before handing over
        owner.start()  # takes every partition once the zombie's session expired
        expected = oracle(execs, cmps)
        wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=120)
        zombie.thaw()  # its hand-over's transaction goes on, with a stale generation
        zombie.wait_for(LOST, 60)  # tried, refused, and told its partitions are gone
        assert zombie.alive(), zombie.tail()
        assert owner.terminate() == 0
        assert zombie.terminate() == 0
    finally:
        owner.kill()
        zombie.thaw()
        zombie.kill()
    streamed = by_key(lines_of(cfg, "aggregated_stats"))
    assert set(streamed) == set(expected)
    for key, record in streamed.items():
        assert_matches(record, expected[key])
    late = [d for d in records(lines_of(cfg, "dead_letter")) if d["reason"] == "late"]
    assert late == [], f"{len(late)} partials handed over twice"
