"""The data as the adversary: records our own schemas accept, or nearly, among live traffic
on two workers with a SIGKILL in the middle. No worker exits; every normal record lands
exactly once; each unusual one is sunk or dead-lettered exactly once with its reason; the
aggregates equal the pandas twin of what was sunk."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from sinks.files.buckets import MAX_TIME_MS
from sinks.offline.aggregate_batch import aggregate_dir
from streams.topics import PARTITIONER, create_topics
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
)
from tests.workers import WorkerProcess, lines_of, records, wait_for_lines

PARTITIONS = 3
WINDOWS = 6
CONFIG = {
    "kafka": {"partitions": PARTITIONS},
    "aggregation": {**AGG, "idle_seconds": 300},  # windows close by stream time alone
    "channels": FAST,
}
LIMIT = 1024 * 1024  # validation.max_payload_bytes
# Strings no one should have to think about: NUL, line and paragraph separators, a byte order
# mark, right-to-left override, combining marks, a family emoji (joiners), the last code
# points of the first and last planes.
ODD = "\u0000\u2028\u2029\ufeff\u202etxet\u0301 👩\u200d👩\u200d👧\u200d👦 \uffff\U0010ffff"
PATH_LIKE = ["../../etc/passwd", "/tmp/x", "C:\\Windows\\x", "a/../b", "date=2025-01-01/hour=00"]


def odd_execution(rng: random.Random, ts: int, engine: str = ODD) -> dict[str, Any]:
    event = execution(rng, engine, ts)
    for field in ("task_id", "engine_instance_id", "input", "output", "status"):
        event[field] = ODD
    event["trace_id"] = f"t-odd-{rng.getrandbits(32):08x}{ODD}"
    return event


def padded(event: dict[str, Any], size: int) -> bytes:
    """`event` with its output padded so that its JSON is exactly `size` bytes."""
    event = {**event, "output": ""}
    event["output"] = "x" * (size - len(orjson.dumps(event)))
    value = orjson.dumps(event)
    assert len(value) == size
    return value


def nested(depth: int) -> dict[str, Any]:
    """A comparison's `metrics` that makes it `depth` levels deep (the record is level 1,
    its metrics level 2)."""
    inner: dict[str, Any] = {}
    for _ in range(depth - 2):
        inner = {"d": inner}
    return inner


class Workload:
    """Normal traffic and the unusual records, each with what must become of it."""

    def __init__(self, rng: random.Random, now: int):
        self.rng = rng
        self.normal_execs = [
            execution(rng, f"e{i % 4}", T0 + i * (WINDOWS * WIDTH) // 600) for i in range(600)
        ]
        self.normal_cmps = [
            comparison(rng, ["e0", "e1", "e2", "e3"], T0 + i * (WINDOWS * WIDTH) // 60)
            for i in range(60)
        ]
        # (topic suffix, id, value, what must happen: ("line", channel) or ("dead", reason))
        self.unusual: list[tuple[str, str, bytes, tuple[str, str]]] = []
        mid = T0 + 2 * WIDTH + 500

        def add_execution(event: dict, outcome: tuple[str, str], value: bytes | None = None):
            value = value or orjson.dumps(event)
            self.unusual.append(("engine-execution", event["trace_id"], value, outcome))

        def add_comparison(event: dict, outcome: tuple[str, str], value: bytes | None = None):
            value = value or orjson.dumps(event)
            self.unusual.append(("comparison-result", event["comparison_id"], value, outcome))

        sunk = ("line", "engine_execution")
        # A timestamp spelt as a float: an integer to JSON Schema, an int everywhere after.
        floaty = execution(rng, "e1", mid)
        add_execution(
            floaty, sunk, orjson.dumps(floaty).replace(b'mp":%d' % mid, b'mp":%d.0' % mid)
        )
        for ts in (T0 * 1000, T0 * 1_000_000, MAX_TIME_MS + 1, 0, -86_400_000):
            add_execution(execution(rng, "e1", ts), ("dead", "timestamp_range"))
        # A clock two days ahead of the record's own time.
        add_execution(execution(rng, "e2", now + 2 * 86_400_000), ("dead", "future"))
        # The longest document the limit allows, and one byte more.
        longest = execution(rng, "e3", mid + 1)
        add_execution(longest, sunk, padded(longest, LIMIT))
        too_long = execution(rng, "e3", mid + 2)
        add_execution(too_long, ("dead", "too_large"), padded(too_long, LIMIT + 1))
        # Unusual Unicode in every string field; engine ids that look like paths.
        add_execution(odd_execution(rng, mid + 3), sunk)
        for n, engine in enumerate(PATH_LIKE):
            add_execution(odd_execution(rng, mid + 4 + n, engine), sunk)
        # A lone surrogate is not Unicode: JSON that no parser should accept.
        lone = execution(rng, "e0", mid + 10)
        add_execution(
            lone, ("dead", "invalid_json"), orjson.dumps(lone).replace(b'"q"', b'"\\ud800"')
        )

        kept = ("line", "comparison_result")
        # The deepest document the limit allows (64 levels), and one level more.
        deep = comparison(rng, ["e0", "e1"], mid + 20)
        deep["metrics"] = nested(64)
        add_comparison(deep, kept)
        deeper = comparison(rng, ["e0", "e1"], mid + 21)
        deeper["metrics"] = nested(65)
        add_comparison(deeper, ("dead", "too_deep"))
        # A sample over librdkafka's default message.max.bytes (1,000,000), within the topic's.
        big = self.winning(mid + 22, 500_100, ["e0", "e1"])
        add_comparison(big, kept)
        self.big_sample = big["comparison_id"]
        # A comparison at the payload limit whose sample is a few bytes over it (one
        # candidate: a sample has less around its text than a comparison of two).
        edge = self.winning(mid + 23, 0, ["e0"])
        edge_value = padded_comparison(edge, LIMIT)
        add_comparison(orjson.loads(edge_value), kept, edge_value)
        self.edge_sample = edge["comparison_id"]
        cmp_odd = comparison(rng, [ODD, PATH_LIKE[0]], mid + 24)
        cmp_odd["query"] = ODD
        for candidate in cmp_odd["candidates"]:
            candidate["output"] = ODD
        add_comparison(cmp_odd, kept)
        floaty_cmp = comparison(rng, ["e0", "e1"], mid + 25)
        value = orjson.dumps(floaty_cmp).replace(b'mp":%d' % (mid + 25), b'mp":%d.0' % (mid + 25))
        add_comparison(floaty_cmp, kept, value)
        add_comparison(comparison(rng, ["e0"], T0 * 1000), ("dead", "timestamp_range"))
        add_comparison(comparison(rng, ["e0"], now + 3 * 86_400_000), ("dead", "future"))

    def winning(self, ts: int, half: int, engines: list[str]) -> dict[str, Any]:
        """A comparison whose winner e0 (score 0.95: gold) answered with `half` characters
        to a query of `half` characters: its sample is about twice that."""
        cmp = comparison(self.rng, engines, ts)
        cmp["query"] = "q" * half
        cmp["winner"] = {"engine_id": "e0", "score": 0.95}
        for candidate in cmp["candidates"]:
            candidate["output"] = "a" * half if candidate["engine_id"] == "e0" else ""
            candidate.pop("score", None)
        return cmp

    def in_time_order(self, suffix: str) -> list[bytes]:
        """Normal and unusual records of one topic, by event time (unusual ones that will be
        dead-lettered anywhere): nothing is late."""
        normal = self.normal_execs if suffix == "engine-execution" else self.normal_cmps
        timed = [(e["timestamp"], orjson.dumps(e)) for e in normal]
        for topic, _id, value, outcome in self.unusual:
            if topic == suffix:
                ts = orjson.loads(value).get("timestamp", T0) if outcome[0] == "line" else T0
                timed.append((ts, value))
        timed.sort(key=lambda pair: pair[0])
        return [value for _ts, value in timed]


def padded_comparison(cmp: dict[str, Any], size: int) -> bytes:
    """`cmp` with its query and winner's output padded so that its JSON is `size` bytes."""
    cmp = {**cmp, "query": ""}
    room = size - len(orjson.dumps(cmp))
    winner = next(c for c in cmp["candidates"] if c["engine_id"] == cmp["winner"]["engine_id"])
    winner["output"] = "a" * (room // 2)
    cmp["query"] = "q" * (size - len(orjson.dumps(cmp)))
    value = orjson.dumps(cmp)
    assert len(value) == size
    return value


def produce(cfg: Any, suffix: str, values: list[bytes], key_field: str) -> None:
    producer = Producer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "partitioner": PARTITIONER,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": 2 * LIMIT,
        }
    )
    topic = cfg.kafka.topic_prefix + suffix
    failed: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failed.append(str(error))

    for value in values:
        try:
            key = str(orjson.loads(value).get(key_field)).encode()
        except orjson.JSONDecodeError:
            key = None
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    assert failed == []


def input_topics_with_room(cfg: Any) -> None:
    """The input topics take records of 2 MiB: the payload limit, not the topic's default
    (1,048,588 bytes for a whole batch), is then what a record meets first."""
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    room = {"max.message.bytes": str(2 * LIMIT)}
    new = [
        NewTopic(cfg.kafka.topic_prefix + suffix, PARTITIONS, 1, config=room)
        for suffix in ("engine-execution", "comparison-result")
    ]
    for future in admin.create_topics(new).values():
        future.result(30)


@pytest.mark.slow
def test_unusual_records_fail_only_themselves_on_two_workers_with_a_sigkill(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(CONFIG)
    input_topics_with_room(cfg)
    create_topics(cfg)
    load = Workload(random.Random(23), int(time.time() * 1000))
    execs, cmps = load.in_time_order("engine-execution"), load.in_time_order("comparison-result")
    workers = [WorkerProcess(path, tmp_path, name=f"w{i}").start() for i in range(2)]
    try:
        produce(cfg, "engine-execution", execs[: len(execs) // 2], "engine_id")
        produce(cfg, "comparison-result", cmps[: len(cmps) // 2], "comparison_id")
        wait_for_lines(cfg, "engine_execution", 100, timeout=60)
        workers[0].kill()  # SIGKILL in the middle of the traffic
        produce(cfg, "engine-execution", execs[len(execs) // 2 :], "engine_id")
        produce(cfg, "comparison-result", cmps[len(cmps) // 2 :], "comparison_id")
        workers[0].start()
        # Every partition's stream time past the workload's windows: they close.
        rng = random.Random(29)
        closing = T0 + (WINDOWS + 3) * WIDTH
        closer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers})
        for p in range(PARTITIONS):
            for suffix, event in (
                ("engine-execution", execution(rng, "e0", closing)),
                ("comparison-result", comparison(rng, ["e0", "e1"], closing)),
            ):
                closer.produce(cfg.kafka.topic_prefix + suffix, orjson.dumps(event), partition=p)
        assert closer.flush(30) == 0
        sunk = sum(1 for *_rest, outcome in load.unusual if outcome[0] == "line")
        dead = len(load.unusual) - sunk + 1  # and the edge comparison's sample
        total = len(load.normal_execs) + len(load.normal_cmps) + sunk + 2 * PARTITIONS
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            got = len(lines_of(cfg, "engine_execution")) + len(lines_of(cfg, "comparison_result"))
            if got >= total and len(lines_of(cfg, "dead_letter")) >= dead:
                break
            time.sleep(0.5)
        expected = {
            (r["engine_id"], r["window_start"]): r
            for r in aggregate_dir(cfg.output.base_path, AGG["window_minutes"], cfg)
            if r["window_start"] < T0 + WINDOWS * WIDTH
        }
        wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=120)
        time.sleep(2)  # anything doubled would have come by now
        for worker in workers:
            assert worker.alive(), f"{worker.name} exited:\n{worker.tail()}"
            assert worker.terminate() == 0, worker.tail()
    finally:
        for worker in workers:
            worker.kill()

    executions = records(lines_of(cfg, "engine_execution"))
    comparisons = records(lines_of(cfg, "comparison_result"))
    letters = records(lines_of(cfg, "dead_letter"))
    exec_ids = [e["trace_id"] for e in executions]
    cmp_ids = [c["comparison_id"] for c in comparisons]
    assert len(exec_ids) == len(set(exec_ids)) and len(cmp_ids) == len(set(cmp_ids))
    for event in load.normal_execs:
        assert event["trace_id"] in exec_ids
    for event in load.normal_cmps:
        assert event["comparison_id"] in cmp_ids
    assert not [d for d in letters if d["reason"] == "internal"], "an internal error"
    for suffix, record_id, _value, (what, where) in load.unusual:
        if what == "line":
            ids = exec_ids if where == "engine_execution" else cmp_ids
            assert ids.count(record_id) == 1, (record_id, where)
            continue
        mine = [d for d in letters if record_id in d["payload"]]
        assert [d["reason"] for d in mine] == [where], (record_id, mine)
        assert all(d["topic"].endswith(suffix) for d in mine)
    # Times are ints wherever they were spelt as floats: the window of the float ones exists.
    streamed = by_key(lines_of(cfg, "aggregated_stats"))
    assert all(isinstance(k[1], int) for k in streamed)
    assert set(streamed) == set(expected)
    for key, record in expected.items():
        assert_matches(streamed[key], record)
    assert (ODD, T0 + 2 * WIDTH) in streamed and (PATH_LIKE[0], T0 + 2 * WIDTH) in streamed
    # The big sample made it; the one over the payload limit is its comparison's dead letter.
    samples = records(lines_of(cfg, "training_sample"))
    by_source = {s["source_trace_id"] for s in samples}
    assert load.big_sample in by_source and load.edge_sample not in by_source
    edge = [
        d for d in letters if d["channel"] == "comparison_result" and d["reason"] == "too_large"
    ]
    assert len(edge) == 1 and edge[0]["payload_truncated"] and "training sample" in edge[0]["error"]
