"""Several workers in one consumer group, joining, killed and stopped mid-stream: every
channel exactly once, every aggregate window once, all in one shared base_path (a directory,
or an s3:// prefix)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import orjson
import pytest

from streams.publisher import Publisher
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
    in_time_order,
    oracle,
    publish,
    workload,
)
from tests.workers import READY, WorkerProcess, lines_of, wait_for_lines


@pytest.mark.slow
@pytest.mark.parametrize("output", ["files", "s3"])
def test_workers_join_die_and_leave_without_loss_or_duplicate(
    make_config: ConfigFactory, tmp_path: Path, output: str, request: pytest.FixtureRequest
) -> None:
    shared = {"base_path": request.getfixturevalue("s3_base")} if output == "s3" else {}
    path, cfg = make_config(
        {
            "kafka": {"partitions": 6},
            "aggregation": {**AGG, "idle_seconds": 20},
            "channels": FAST,
            "output": shared,
        }
    )
    create_topics(cfg)
    rng = random.Random(99)
    engines = [f"e{i}" for i in range(8)]
    execs, cmps = workload(rng, range(10), engines, per_window=40)

    def feed() -> None:
        for chunk, cmp_chunk in in_time_order(execs, cmps, 400):
            publish(cfg, chunk, cmp_chunk)
            time.sleep(1.5)

    first = WorkerProcess(path, tmp_path, "w1").start()
    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(3)
    second = WorkerProcess(path, tmp_path, "w2").start(wait_ready=False)
    third = WorkerProcess(path, tmp_path, "w3").start(wait_ready=False)
    workers = [first, second, third]
    try:
        time.sleep(8)
        second.kill()
        time.sleep(4)
        third.wait_for(READY)  # a loaded machine: SIGTERM before its handlers is not a leave
        assert third.terminate() == 0
        feeder.join()
        # Stream time moves on in every partition: every window of the workload closes.
        with Publisher(cfg) as publisher:
            for engine in engines:
                publisher.collect_engine_execution(execution(rng, engine, T0 + 12 * WIDTH))
            publisher.collect_comparison_result(comparison(rng, engines, T0 + 12 * WIDTH))
        expected = {k: v for k, v in oracle(execs, cmps).items() if k[1] < T0 + 10 * WIDTH}
        qualifying = {
            c["comparison_id"]
            for c in cmps
            if derive_sample(c, cfg.training.thresholds) is not None
        }
        wait_for_lines(cfg, "engine_execution", len(execs) + len(engines), timeout=180)
        wait_for_lines(cfg, "training_sample", len(qualifying), timeout=120)
        wait_for_lines(cfg, "aggregated_stats", len(expected), timeout=180)
        assert first.terminate() == 0
    finally:
        for worker in workers:
            worker.kill()
    ids = [orjson.loads(x)["trace_id"] for x in lines_of(cfg, "engine_execution")]
    assert len(ids) == len(set(ids)) == len(execs) + len(engines)
    comparison_ids = [orjson.loads(x)["comparison_id"] for x in lines_of(cfg, "comparison_result")]
    assert len(comparison_ids) == len(set(comparison_ids)) == len(cmps) + 1
    assert set(comparison_ids) >= {c["comparison_id"] for c in cmps}
    samples = [orjson.loads(x)["source_trace_id"] for x in lines_of(cfg, "training_sample")]
    assert len(samples) == len(set(samples))
    assert set(samples) >= qualifying
    streamed = by_key(lines_of(cfg, "aggregated_stats"))
    closed = {k: v for k, v in streamed.items() if k[1] < T0 + 10 * WIDTH}
    assert set(closed) == set(expected)
    for key, record in closed.items():
        assert_matches(record, expected[key])
