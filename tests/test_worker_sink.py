"""Sinks in real worker processes against the real broker: every channel, dead letters,
flush by size and by time, graceful stop, disabled channels, `on_invalid: fail`."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import orjson

from streams import events
from streams.publisher import Publisher
from streams.topics import create_topics
from tests.conftest import ConfigFactory
from tests.workers import WorkerProcess, lines_of, produce, records, wait_for_lines


def executions(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    return [events.engine_execution(rng, f"e{i % 5}", now + i) for i in range(n)]


def hidden_files(base: Path) -> list[Path]:
    return [p for p in base.rglob(".*") if p.is_file()]


def test_every_channel_once_and_invalid_events_become_dead_letters(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            "validation": {"max_payload_bytes": 65536, "max_dead_letter_payload_bytes": 1024},
            "training": {"enabled": False},  # only what was published: tests/test_training.py
        }
    )
    create_topics(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    rng = random.Random(3)
    execs = executions(1500)
    comparisons = [
        events.comparison_result(rng, ["e1", "e2", "e3"], 1_764_000_000_000 + i) for i in range(200)
    ]
    samples = [events.training_sample(rng, 1_764_000_000_000 + i) for i in range(100)]
    with Publisher(cfg) as publisher:
        for e in execs:
            publisher.collect_engine_execution(e)
        for c in comparisons:
            publisher.collect_comparison_result(c)
        for s in samples:
            publisher.collect_training_sample(s)
    wrong_type = dict(execs[0], metrics={**execs[0]["metrics"], "latency_ms": "fast"})
    missing = {k: v for k, v in execs[0].items() if k != "engine_id"}
    invalid = {
        "invalid_json": b'{"trace_id": "t1", ',
        "schema_wrong_type": orjson.dumps(wrong_type),
        "schema_missing": orjson.dumps(missing),
        "too_large": orjson.dumps(dict(execs[0], input="x" * 100_000)),
        "not_utf8": b'{"trace_id": "\xff\xfe"}',
        "not_object": b"[1, 2, 3]",
    }
    produce(cfg, "engine-execution", list(invalid.values()))

    got = wait_for_lines(cfg, "engine_execution", len(execs))
    assert sorted(r["trace_id"] for r in records(got)) == sorted(e["trace_id"] for e in execs)
    assert len(wait_for_lines(cfg, "comparison_result", 200)) == 200
    assert len(wait_for_lines(cfg, "training_sample", 100)) == 100
    rejected = records(wait_for_lines(cfg, "dead_letter", len(invalid)))
    assert len(rejected) == len(invalid)
    by_payload = {r["payload"][:40]: r for r in rejected}
    assert {r["reason"] for r in rejected} >= {"invalid_json", "schema", "too_large", "not_object"}
    for r in rejected:
        assert r["channel"] == "engine_execution"
        assert r["topic"] == cfg.kafka.topic_prefix + "engine-execution"
        assert r["error"] and r["offset"] >= 0 and r["received_at"] > 0
    big = next(r for r in rejected if r["reason"] == "too_large")
    assert big["payload_truncated"] is True and len(big["payload"]) <= 1024
    assert any("metrics.latency_ms" in r["error"] for r in rejected)
    assert any("engine_id" in r["error"] for r in rejected)
    assert by_payload  # each invalid record is one line, and the worker kept running
    assert worker.alive()
    # A line is the event as published: the original bytes, nothing added.
    assert orjson.loads(got[0]) in execs
    assert worker.terminate() == 0
    assert hidden_files(cfg.output.base_path) == []  # graceful stop finishes every file


def test_flush_by_size_then_graceful_stop(make_config: ConfigFactory, tmp_path: Path) -> None:
    path, cfg = make_config(
        {
            "channels": {
                "engine_execution": {
                    "buffer_size": 100,
                    "auto_flush_seconds": 3600,
                    "roll_bytes": 1,
                }
            }
        }
    )
    create_topics(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    # A batch is flushed once buffer_size records wait (whole fetches: it may hold more);
    # fewer than buffer_size stay waiting, far from auto_flush_seconds.
    produce(cfg, "engine-execution", [orjson.dumps(e) for e in executions(250)])
    visible = len(wait_for_lines(cfg, "engine_execution", 151, timeout=30))
    assert 151 <= visible <= 250
    produce(cfg, "engine-execution", [orjson.dumps(e) for e in executions(10, seed=2)])
    time.sleep(4)
    visible = len(lines_of(cfg, "engine_execution"))
    assert 260 - visible < 100
    assert worker.terminate() == 0
    assert len(lines_of(cfg, "engine_execution")) == 260  # the graceful stop flushed the rest


def test_flush_by_time_and_disabled_channel(make_config: ConfigFactory, tmp_path: Path) -> None:
    path, cfg = make_config(
        {
            "channels": {
                "engine_execution": {"auto_flush_seconds": 0.5, "roll_seconds": 1.0},
                "comparison_result": {"enabled": False},
            }
        }
    )
    create_topics(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    rng = random.Random(5)
    produce(
        cfg,
        "comparison-result",
        [orjson.dumps(events.comparison_result(rng, ["a", "b"], 1_764_000_000_000))] * 5,
    )
    produce(cfg, "engine-execution", [orjson.dumps(executions(1)[0])])  # warm-up
    wait_for_lines(cfg, "engine_execution", 1, timeout=30)
    produce(cfg, "engine-execution", [orjson.dumps(executions(1, seed=9)[0])])
    published = time.monotonic()
    assert len(wait_for_lines(cfg, "engine_execution", 2, timeout=10)) == 2
    assert time.monotonic() - published <= 0.5 + 1.0 + 1.0
    assert worker.terminate() == 0
    assert not (cfg.output.base_path / "comparisons").exists()


def test_on_invalid_fail_stops_the_worker_non_zero(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config({"validation": {"on_invalid": "fail"}})
    create_topics(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    produce(cfg, "engine-execution", [b"{broken"])
    code = worker.wait(60)
    assert code != 0
    assert b"invalid record at" in worker.log()
    assert lines_of(cfg, "engine_execution") == []
    assert lines_of(cfg, "dead_letter") == []


def test_workers_sigkilled_again_and_again_leave_one_folder_in_the_temp_dir(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Adversary: SIGKILL, two starts in a row. Faust wants a data folder; one per start
    (the old mkdtemp) left a folder in /tmp behind each worker that never reached its exit."""
    path, cfg = make_config()
    create_topics(cfg)
    temp = tmp_path / "tmp"
    temp.mkdir()
    worker = WorkerProcess(path, tmp_path, env={"TMPDIR": str(temp)})
    for _ in range(2):  # the second start finds the first one's folder
        worker.start()
        worker.kill()
    assert [p.name for p in temp.iterdir()] == [f"json-engine-faust-{os.getuid()}"]
