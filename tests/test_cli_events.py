"""`json-engine validate`, `publish` and `cat` as a user runs them: real processes, real broker."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from sinks.files.names import finished_name
from streams import events
from streams.brokers import watermarks
from streams.config import JsonEngineConfig
from streams.topics import create_topics, topic_name
from tests import workers
from tests.conftest import ConfigFactory

TS = 1_764_300_000_000


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Bytes in and out: `cat` prints the lines exactly as they were published."""
    return workers.cli(*args, stdin=stdin, text=False)


def valid_lines(kind: str, count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    if kind == "engine_execution":
        made = [events.engine_execution(rng, f"engine-{i % 3}", TS + i) for i in range(count)]
    elif kind == "comparison_result":
        made = [events.comparison_result(rng, events.ENGINE_IDS, TS + i) for i in range(count)]
    else:
        made = [events.training_sample(rng, TS + i) for i in range(count)]
    return [orjson.dumps(e) for e in made]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def with_invalid_lines(tmp_path: Path) -> tuple[Path, set[int]]:
    """A file of 6 valid engine executions, 3 invalid ones and a blank line; invalid numbers."""
    good = valid_lines("engine_execution", 6)
    missing = orjson.loads(good[0])
    del missing["engine_id"]
    negative = orjson.loads(good[1])
    negative["metrics"]["latency_ms"] = -5
    lines = [
        good[0],
        orjson.dumps(missing),  # line 2
        good[1],
        b'{"trace_id": "t1", ',  # line 4: malformed
        b"",  # line 5: blank, skipped
        good[2],
        orjson.dumps(negative),  # line 7
        good[3],
        good[4],
        good[5],
    ]
    return write_lines(tmp_path / "mixed.jsonl", lines), {2, 4, 7}


def topic_count(cfg: JsonEngineConfig, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": "count"})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        total = 0
        for partition in meta.partitions:
            low, high = watermarks(consumer, TopicPartition(topic, partition))
            total += high - low
        return total
    finally:
        consumer.close()


def test_validate_reports_each_invalid_line_and_exits_1(config_file: Path, tmp_path: Path) -> None:
    path, invalid = with_invalid_lines(tmp_path)
    done = cli("validate", "--type", "engine_execution", str(path), "--config", str(config_file))
    assert done.returncode == 1, done.stderr
    reported = done.stdout.decode().splitlines()
    expected = [[str(path), str(number)] for number in sorted(invalid)]
    assert [line.split(":")[:2] for line in reported] == expected
    by_line = {int(line.split(":")[1]): line.split(": ", 1)[1] for line in reported}
    assert "engine_id is required" in by_line[2]
    assert "JSON" in by_line[4]
    assert "metrics.latency_ms must be >= 0" in by_line[7]
    assert "6 valid, 3 invalid" in done.stderr.decode()


def test_validate_all_valid_exits_0_for_each_type(config_file: Path, tmp_path: Path) -> None:
    for kind in ("engine_execution", "comparison_result", "training_sample"):
        path = write_lines(tmp_path / f"{kind}.jsonl", valid_lines(kind, 20))
        done = cli("validate", "--type", kind, str(path), "--config", str(config_file))
        assert done.returncode == 0, (kind, done.stdout, done.stderr)
        assert done.stdout == b""
    # One type's events are not another's.
    done = cli(
        "validate",
        "--type",
        "training_sample",
        str(tmp_path / "engine_execution.jsonl"),
        "--config",
        str(config_file),
    )
    assert done.returncode == 1
    assert len(done.stdout.decode().splitlines()) == 20


def test_publish_summary_and_exit_1_when_a_line_is_invalid(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config_file, cfg = make_config()
    create_topics(cfg)
    path, invalid = with_invalid_lines(tmp_path)
    done = cli("publish", "--type", "engine_execution", str(path), "--config", str(config_file))
    assert done.returncode == 1, done.stderr
    assert "published 6, invalid 3, failed 0" in done.stdout.decode()
    for number in invalid:  # and where, on stderr
        assert f"{path}:{number}:" in done.stderr.decode()
    assert topic_count(cfg, topic_name(cfg, "engine_execution")) == 6


def test_publish_all_valid_exits_0(make_config: ConfigFactory, tmp_path: Path) -> None:
    config_file, cfg = make_config()
    create_topics(cfg)
    first = write_lines(tmp_path / "a.jsonl", valid_lines("comparison_result", 30, seed=1))
    second = write_lines(tmp_path / "b.jsonl", valid_lines("comparison_result", 20, seed=2))
    done = cli(
        "publish",
        "--type",
        "comparison_result",
        str(first),
        str(second),
        "--config",
        str(config_file),
    )
    assert done.returncode == 0, done.stderr
    assert "published 50, invalid 0, failed 0" in done.stdout.decode()
    assert topic_count(cfg, topic_name(cfg, "comparison_result")) == 50


def test_publish_reads_stdin(make_config: ConfigFactory) -> None:
    config_file, cfg = make_config()
    create_topics(cfg)
    lines = valid_lines("training_sample", 25)
    done = cli(
        "publish",
        "--type",
        "training_sample",
        "-",
        "--config",
        str(config_file),
        stdin=b"".join(line + b"\r\n" for line in lines),
    )
    assert done.returncode == 0, done.stderr
    assert "published 25, invalid 0, failed 0" in done.stdout.decode()
    assert topic_count(cfg, topic_name(cfg, "training_sample")) == 25


@pytest.mark.parametrize("command", ["publish", "validate"])
def test_bad_type_exits_2(config_file: Path, tmp_path: Path, command: str) -> None:
    path = write_lines(tmp_path / "e.jsonl", valid_lines("engine_execution", 1))
    done = cli(command, "--type", "aggregated_stats", str(path), "--config", str(config_file))
    assert done.returncode == 2
    assert b"--type must be one of" in done.stderr


def test_cat_prints_finished_lines_only(make_config: ConfigFactory, tmp_path: Path) -> None:
    config_file, cfg = make_config()
    directory = Path(cfg.output.base_path) / "events"
    directory.mkdir(parents=True)
    lines = valid_lines("engine_execution", 5)
    # Partition 1 sorts after partition 0 whatever the order the files were written in.
    write_lines(directory / finished_name(1, 0, 1), lines[3:5])
    write_lines(directory / finished_name(0, 0, 1), lines[0:2])
    write_lines(directory / finished_name(0, 2, 2), lines[2:3])
    write_lines(directory / ".p000-000000000003-000000000003-10.inprogress", [b'{"hidden": 1}'])
    write_lines(directory / ".p002-000000000000.new", [b'{"hidden": 2}'])
    write_lines(directory / ".p003-000000000000-000000000000.jsonl", [b'{"hidden": 3}'])
    done = cli("cat", "engine_execution", "--config", str(config_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"".join(line + b"\n" for line in lines)
    # --output-dir instead of output.base_path; a channel with nothing yet prints nothing.
    done = cli(
        "cat", "engine_execution", "--config", str(config_file), "--output-dir", str(tmp_path)
    )
    assert done.returncode == 0 and done.stdout == b""
    done = cli("cat", "dead_letter", "--config", str(config_file))
    assert done.returncode == 0 and done.stdout == b""


def test_cat_unknown_channel_exits_2(config_file: Path) -> None:
    done = cli("cat", "nope", "--config", str(config_file))
    assert done.returncode == 2
    assert b"unknown channel" in done.stderr
