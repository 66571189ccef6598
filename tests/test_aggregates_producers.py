"""Aggregates that do not depend on what the producers do, nor on where a crash fell.

- The partitioner matrix: the same records produced with murmur2, librdkafka's
  consistent_random, null keys, a random custom partitioner, and a mix of them all give the
  same aggregated_stats, equal to the pandas twin.
- A hot engine: most executions from one engine, without keys, spread over every partition.
- Determinism: an uninterrupted run and a run with SIGKILLs at random moments, on the same
  records in the same partitions, give the same aggregated_stats and the same late dead
  letters, and both equal the twin with per-partition lateness.
"""

from __future__ import annotations

import math
import random
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer

from sinks.offline.aggregate_batch import aggregate_dir, aggregate_frames
from streams.topics import create_topics
from tests.conftest import ConfigFactory
from tests.test_aggregator import (
    AGG,
    EXACT,
    FAST,
    T0,
    WIDTH,
    assert_matches,
    by_key,
    comparison,
    execution,
)
from tests.workers import WorkerProcess, lines_of, records, wait_for_lines

PARTITIONS = 4
ENGINES = [f"e{i}" for i in range(6)]
CONFIG = {
    "kafka": {"partitions": PARTITIONS},
    "aggregation": {**AGG, "idle_seconds": 300},  # windows close by stream time alone
    "channels": FAST,
    "training": {"enabled": False},
}


def in_order_workload(seed: int, windows: int = 6) -> tuple[list[dict], list[dict]]:
    """Executions (engine e0 hot: 80%) and comparisons in time order, never late."""
    rng = random.Random(seed)
    execs = []
    for w in range(windows):
        for _ in range(250):
            engine = "e0" if rng.random() < 0.8 else rng.choice(ENGINES[1:])
            execs.append(execution(rng, engine, T0 + w * WIDTH + rng.randrange(WIDTH)))
    cmps = [
        comparison(rng, ENGINES, T0 + w * WIDTH + rng.randrange(WIDTH))
        for w in range(windows)
        for _ in range(15)
    ]
    execs.sort(key=lambda e: e["timestamp"])
    cmps.sort(key=lambda c: c["timestamp"])
    return execs, cmps


def closers(rng: random.Random, windows: int) -> tuple[list[dict], list[dict]]:
    """One execution and one comparison per partition, far ahead: every input partition's
    stream time passes every window of the workload."""
    ts = T0 + (windows + 3) * WIDTH
    return (
        [execution(rng, "e0", ts) for _ in range(PARTITIONS)],
        [comparison(rng, ENGINES, ts) for _ in range(PARTITIONS)],
    )


class Topics:
    """Produces to the input topics of one prefix, as some producer would."""

    def __init__(self, cfg: Any, partitioner: str = "murmur2_random"):
        self.prefix = cfg.kafka.topic_prefix
        self.producer = Producer(
            {
                "bootstrap.servers": cfg.kafka.bootstrap_servers,
                "partitioner": partitioner,
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )

    def send(
        self, suffix: str, value: dict, key: str | None = None, partition: int | None = None
    ) -> None:
        args: dict[str, Any] = {"key": key.encode() if key is not None else None}
        if partition is not None:
            args["partition"] = partition
        while True:
            try:
                self.producer.produce(self.prefix + suffix, orjson.dumps(value), **args)
                return
            except BufferError:
                self.producer.poll(0.1)

    def flush(self) -> None:
        assert self.producer.flush(60) == 0


def produce_with(cfg: Any, how: str, execs: list[dict], cmps: list[dict], seed: int) -> None:
    """`how`: murmur2 | consistent_random | null_keys | random_partition | mix."""
    rng = random.Random(seed)
    partitioners = {"murmur2": "murmur2_random", "consistent_random": "consistent_random"}
    topics = Topics(cfg, partitioners.get(how, "consistent_random"))
    modes = ["keyed", "null", "random"]
    for suffix, events, key_of in (
        ("engine-execution", execs, lambda e: e["engine_id"]),
        ("comparison-result", cmps, lambda c: c["comparison_id"]),
    ):
        for event in events:
            mode = {"null_keys": "null", "random_partition": "random", "mix": None}.get(
                how, "keyed"
            )
            mode = mode or rng.choice(modes)
            if mode == "keyed":
                topics.send(suffix, event, key=key_of(event))
            elif mode == "null":
                topics.send(suffix, event)
            else:
                topics.send(suffix, event, partition=rng.randrange(PARTITIONS))
    topics.flush()


def send_closers(cfg: Any, execs: list[dict], cmps: list[dict]) -> None:
    topics = Topics(cfg)
    for p, (e, c) in enumerate(zip(execs, cmps, strict=True)):
        topics.send("engine-execution", e, partition=p)
        topics.send("comparison-result", c, partition=p)
    topics.flush()


def twin(execs: list[dict], cmps: list[dict]) -> dict[tuple[str, int], dict]:
    frame = pd.json_normalize(execs)
    got = aggregate_frames(frame, pd.json_normalize(cmps), AGG["window_minutes"])
    return {(r["engine_id"], r["window_start"]): r for r in got}


@pytest.mark.slow
@pytest.mark.parametrize(
    "how", ["murmur2", "consistent_random", "null_keys", "random_partition", "mix"]
)
def test_aggregates_do_not_depend_on_the_producers_partitioner(
    make_config: ConfigFactory, tmp_path: Path, how: str
) -> None:
    path, cfg = make_config(CONFIG)
    create_topics(cfg)
    execs, cmps = in_order_workload(seed=5)
    expected = twin(execs, cmps)
    worker = WorkerProcess(path, tmp_path).start()
    try:
        produce_with(cfg, how, execs, cmps, seed=6)
        send_closers(cfg, *closers(random.Random(7), 6))
        lines = wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=120)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    streamed = by_key(lines)
    assert set(streamed) == set(expected)
    for key, record in streamed.items():
        assert_matches(record, expected[key])
    # The hot engine: its executions sit in every partition, unless a key pins them to one.
    spread = {
        int(name.split("-")[0][1:])
        for name in (p.name for p in (cfg.output.base_path / "events").rglob("p*.jsonl"))
    }
    if how != "murmur2":
        assert spread == set(range(PARTITIONS))
    assert records(lines_of(cfg, "dead_letter")) == []  # nothing was late


def late_workload(seed: int, windows: int = 8) -> tuple[list[dict], list[dict]]:
    """In time order, with stragglers: some far behind (late everywhere) and some just
    around the grace (late or not depending on their partition's own order)."""
    rng = random.Random(seed)
    execs, cmps = [], []
    for w in range(windows):
        base = T0 + w * WIDTH
        batch = [
            execution(rng, rng.choice(ENGINES), base + rng.randrange(WIDTH)) for _ in range(200)
        ]
        batch.sort(key=lambda e: e["timestamp"])
        if w >= 2:
            batch += [
                execution(rng, rng.choice(ENGINES), T0 + rng.randrange(WIDTH)) for _ in range(5)
            ]
            batch += [
                execution(rng, rng.choice(ENGINES), base - WIDTH + rng.randrange(WIDTH))
                for _ in range(10)
            ]
        execs += batch
        cmps += sorted(
            (comparison(rng, ENGINES, base + rng.randrange(WIDTH)) for _ in range(10)),
            key=lambda c: c["timestamp"],
        )
        if w >= 2:
            cmps.append(comparison(rng, ENGINES, T0 + rng.randrange(WIDTH)))
    return execs, cmps


def late_letters(cfg: Any) -> set[tuple[str, int, int]]:
    prefix = cfg.kafka.topic_prefix
    return {
        (r["topic"].removeprefix(prefix), r["partition"], r["offset"])
        for r in records(lines_of(cfg, "dead_letter"))
        if r["reason"] == "late"
    }


@pytest.mark.slow
def test_crashes_change_neither_the_values_nor_which_events_are_late(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    steady_path, steady = make_config(CONFIG, "steady.yaml")
    crashing_cfg = {
        **CONFIG,
        "kafka": {"partitions": PARTITIONS, "topic_prefix": steady.kafka.topic_prefix + "k."},
        "output": {"base_path": str(tmp_path / "crashing")},
    }
    crashing_path, crashing = make_config(crashing_cfg, "crashing.yaml")
    for cfg in (steady, crashing):
        create_topics(cfg)
    rng = random.Random(11)
    execs, cmps = late_workload(seed=12)
    plan = [("engine-execution", e, rng.randrange(PARTITIONS)) for e in execs]
    plan += [("comparison-result", c, rng.randrange(PARTITIONS)) for c in cmps]
    a = WorkerProcess(steady_path, tmp_path, "steady").start()
    b = WorkerProcess(crashing_path, tmp_path, "crashing").start()
    producers = [Topics(steady), Topics(crashing)]

    def feed() -> None:
        for start in range(0, len(plan), 20):  # ~40 s: the kills fall while it flows
            for topics in producers:
                for suffix, event, partition in plan[start : start + 20]:
                    topics.send(suffix, event, partition=partition)
                topics.flush()
            time.sleep(0.35)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        for _ in range(3):  # each kill falls while the worker reads and folds
            b.wait_for(b'"message": "recovered', timeout=60)
            time.sleep(rng.uniform(1.0, 3.0))
            b.kill()
            b.start(wait_ready=False)
        feeder.join()
        close_e, close_c = closers(rng, 8)
        for cfg in (steady, crashing):
            send_closers(cfg, close_e, close_c)
        wait_for_lines(steady, "engine_execution", len(execs) + PARTITIONS, timeout=120)
        wait_for_lines(steady, "comparison_result", len(cmps) + PARTITIONS, timeout=120)
        expected = aggregate_dir(steady.output.base_path, config=steady, grace_seconds=1)
        expected = [r for r in expected if r["window_start"] < T0 + 8 * WIDTH]
        got = {}
        for cfg in (steady, crashing):
            got[cfg.kafka.topic_prefix] = by_key(
                wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=150)
            )
        assert a.terminate() == 0 and b.terminate() == 0
    finally:
        a.kill()
        b.kill()
    runs = list(got.values())
    assert set(runs[0]) == set(runs[1]) == {(r["engine_id"], r["window_start"]) for r in expected}
    for key, one in runs[0].items():
        other = runs[1][key]
        for name in EXACT:
            assert one[name] == other[name], (key, name)
        assert one["comparisons"] == other["comparisons"]
        assert one["latency_ms"]["min"] == other["latency_ms"]["min"]
        assert one["latency_ms"]["max"] == other["latency_ms"]["max"]
        assert math.isclose(one["latency_ms"]["avg"], other["latency_ms"]["avg"], rel_tol=1e-9)
    for record in expected:
        assert_matches(runs[0][(record["engine_id"], record["window_start"])], record)
    late = late_letters(steady)
    assert late, "the workload has late events"
    assert late_letters(crashing) == late


def test_partitions_a_transactional_producer_wrote_last_go_idle_and_close_their_windows(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """The adversary: a transactional producer (another pipeline's exactly-once output, or
    json-engine's own OTLP reader), so that each partition ends in a commit marker, past its
    last record. The first two windows go to every partition, the next two to partition 0
    only: the other partitions fall silent early and must go idle, which they do only if a
    partition read to its last record, marker aside, counts as read to its end. Then every
    window the last event closes comes out."""
    path, cfg = make_config({**CONFIG, "aggregation": {**AGG, "idle_seconds": 3}})
    create_topics(cfg)
    execs, cmps = in_order_workload(seed=11, windows=4)
    last = max(e["timestamp"] for e in execs)
    grace = AGG["grace_seconds"] * 1000
    expected = {k: r for k, r in twin(execs, cmps).items() if k[1] + WIDTH + grace <= last}
    producer = Producer(
        {"bootstrap.servers": cfg.kafka.bootstrap_servers, "transactional.id": str(tmp_path)}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    prefix = cfg.kafka.topic_prefix
    for topic, events in (("engine-execution", execs), ("comparison-result", cmps)):
        for n, event in enumerate(events):
            early = event["timestamp"] < T0 + 2 * WIDTH
            partition = n % PARTITIONS if early else 0
            producer.produce(prefix + topic, orjson.dumps(event), partition=partition)
    producer.commit_transaction(30)
    worker = WorkerProcess(path, tmp_path).start()
    try:
        lines = wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=90)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    streamed = by_key(lines)
    assert set(streamed) == set(expected)
    for key, record in streamed.items():
        assert_matches(record, expected[key])
