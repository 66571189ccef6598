"""What a newcomer sees (issue 23): the demo on a broker that has just started, and every
command that talks to Kafka against a broker that is down. Never a traceback.

Adversaries: a fresh broker data directory per demo run (its group coordinator and
transaction coordinator are made on first use, and answer NOT_COORDINATOR or "load in
progress" for a moment: once in three runs that was a traceback); no broker at all; and
the retry helper itself against those errors.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import KafkaError, KafkaException

from streams import events
from streams.brokers import COMMAND_WAIT_S, BrokerError, retry
from tests.test_observability import free_port

DEMO_PORT = int(os.environ.get("JSON_ENGINE_TEST_DEMO_PORT", "19560"))
RUNS = 3
SLACK_S = 20.0  # start-up of the interpreter and the command, beside its wait for the brokers


def clean_env(**extra: str) -> dict[str, str]:
    """The user's environment without the tests' broker or config."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("JSON_ENGINE") and name != "KAFKA_BOOTSTRAP_SERVERS"
    }
    return {**env, **extra}


def json_engine(*args: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", *args]


def run_demo(run: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """One demo on a broker of its own, started from a fresh data directory, stopped after."""
    port, data_dir = DEMO_PORT + 2 * run, tmp_path / f"kafka-{run}"
    try:
        return subprocess.run(
            json_engine(
                "demo",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--events",
                "200",
                "--output-dir",
                str(tmp_path / f"output-{run}"),
            ),
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        subprocess.run(
            json_engine("kafka", "down", "--port", str(port), "--data-dir", str(data_dir)),
            env=clean_env(),
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.mark.slow
def test_the_demo_on_a_fresh_broker_three_times(tmp_path: Path) -> None:
    # At the same time: each has its own broker, ports and directories, and most of a demo
    # is waiting (for its broker, for its windows to close).
    with ThreadPoolExecutor(RUNS) as pool:
        results = list(pool.map(lambda run: run_demo(run, tmp_path), range(RUNS)))
    for run, result in enumerate(results):
        said = result.stdout + result.stderr
        assert "Traceback" not in said, f"run {run}:\n{said}"
        assert result.returncode == 0, f"run {run}:\n{said}"
        # The full report: ratings with intervals, the pairwise matrix, the frontier, cost.
        (report,) = (tmp_path / f"output-{run}").glob("demo-*/report.html")
        page = report.read_text()
        wanted = ("Bradley-Terry", "Pairwise win fractions", "Rating against cost", "★ yes",
                  "Ratings by category")  # fmt: skip
        for part in wanted:
            assert part in page, f"run {run}: the demo's report has no {part!r}"


def test_commands_against_a_broker_that_is_down_end_with_one_error_line(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = tmp_path / "json-engine.yaml"
    config.write_text(yaml.safe_dump({"json_engine": {"kafka": {"bootstrap_servers": bootstrap}}}))
    lines = tmp_path / "executions.jsonl"
    execution = events.engine_execution(random.Random(1), "e1", 1_780_000_000_000)
    lines.write_bytes(orjson.dumps(execution) + b"\n")
    commands = {
        "topics create": ["topics", "create", "--config", str(config)],
        "topics list": ["topics", "list", "--config", str(config)],
        "publish": ["publish", "--type", "engine_execution", str(lines), "--config", str(config)],
        "demo": ["demo", "--events", "10", "--output-dir", str(tmp_path / "demo")],
    }
    env = clean_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap)  # the demo's broker, when one is set
    started = time.monotonic()
    procs = {
        name: subprocess.Popen(
            json_engine(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, args in commands.items()
    }
    bound = COMMAND_WAIT_S + SLACK_S
    for name, proc in procs.items():
        try:
            _out, err = proc.communicate(timeout=max(1.0, bound - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            raise AssertionError(f"{name}: still running {bound:.0f}s after it started") from None
        assert proc.returncode not in (0, None), f"{name}: exit {proc.returncode}\n{err}"
        assert "Traceback" not in err, f"{name}:\n{err}"
        assert [line for line in err.splitlines() if line.startswith("error: ")], f"{name}:\n{err}"
        assert bootstrap in err, f"{name} does not say which broker it tried:\n{err}"


def failing(codes: list[int]) -> Callable[[float], str]:
    """A broker call that fails with these errors, one per attempt, then answers."""
    left = list(codes)

    def call(_timeout: float) -> str:
        if left:
            raise KafkaException(KafkaError(left.pop(0), "from the test"))
        return "answer"

    return call


def test_retry_waits_out_a_coordinator_that_is_not_there_yet() -> None:
    codes = [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS]
    assert retry(failing(codes), "offsets", seconds=10) == "answer"


def test_retry_gives_up_at_once_on_a_refusal_and_at_the_deadline_on_the_rest() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerError, match=r"^offsets: TOPIC_AUTHORIZATION_FAILED"):
        retry(failing([KafkaError.TOPIC_AUTHORIZATION_FAILED]), "offsets", seconds=10)
    assert time.monotonic() - started < 1
    with pytest.raises(BrokerError, match=r"NOT_COORDINATOR.*still failing after 1s"):
        retry(failing([KafkaError.NOT_COORDINATOR] * 100), "offsets", seconds=1)
    assert time.monotonic() - started < 3
