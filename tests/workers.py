"""Real worker processes for the integration tests: start, wait until ready, stop, kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from sinks.reader import channel_dir, iter_lines
from streams.config import JsonEngineConfig

READY = b"[^Worker]: Ready"
# Every worker process a test started: the conftest's reaper kills what is left after it, so
# that a failing test leaves no worker behind.
STARTED: list[WorkerProcess] = []


class WorkerProcess:
    """One `json-engine worker` subprocess; its log goes to a file of the test's own."""

    def __init__(
        self,
        config_file: Path,
        log_dir: Path,
        name: str = "worker",
        env: dict[str, str] | None = None,
    ):
        self.config_file = config_file
        self.log_dir = log_dir
        self.name = name
        self.env = env or {}
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_dir / f"{name}-0.log"

    def start(self, wait_ready: bool = True, timeout: float = 90) -> WorkerProcess:
        STARTED.append(self)
        self.starts += 1
        self.log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams.cli",
                    "worker",
                    "--config",
                    str(self.config_file),
                    "-l",
                    "info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        if wait_ready:
            self.wait_for(READY, timeout)
        return self

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    def wait_for(self, marker: bytes, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
            time.sleep(0.2)
        raise AssertionError(f"worker not {marker!r} after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return b"\n".join(self.log().splitlines()[-lines:]).decode(errors="replace")

    def frozen(self) -> bool:
        """Stopped by SIGSTOP (state T in /proc)."""
        assert self.proc is not None
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def wait_frozen(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.frozen():
            if time.monotonic() > deadline or not self.alive():
                raise AssertionError(f"worker did not freeze:\n{self.tail()}")
            time.sleep(0.1)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def thaw_and_kill(self) -> None:
        """Whatever state it is in (frozen too): gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


def cli(
    *args: str, stdin: bytes | str | None = None, text: bool = True, timeout: float = 240
) -> subprocess.CompletedProcess[Any]:
    """`json-engine ARGS…` in a child process, as a user runs it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        input=stdin,
        capture_output=True,
        text=text,
        timeout=timeout,
        check=False,
    )


def produce(
    config: JsonEngineConfig,
    topic_suffix: str,
    values: list[bytes],
    keys: list[bytes | None] | None = None,
) -> None:
    """Publish raw values with a plain confluent-kafka producer, as any client could."""
    producer = Producer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "linger.ms": 10,
            "enable.idempotence": True,
        }
    )
    topic = config.kafka.topic_prefix + topic_suffix
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, key=keys[i] if keys else None)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def lines_of(config: JsonEngineConfig, channel: str) -> list[bytes]:
    return list(
        iter_lines(channel_dir(config.output.base_path, config.channels.get(channel).filename))
    )


def assert_once(config: JsonEngineConfig, execs: list[dict[str, Any]]) -> None:
    """Every execution is in exactly one finished line of its channel."""
    ids = [orjson.loads(line)["trace_id"] for line in lines_of(config, "engine_execution")]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates"
    want, got = {e["trace_id"] for e in execs}, set(ids)
    assert got == want, f"{len(want - got)} missing, {len(got - want)} never sent"


def wait_for_lines(
    config: JsonEngineConfig, channel: str, count: int, timeout: float = 120
) -> list[bytes]:
    deadline = time.monotonic() + timeout
    lines = lines_of(config, channel)
    while len(lines) < count and time.monotonic() < deadline:
        time.sleep(0.25)
        lines = lines_of(config, channel)
    return lines


def records(lines: list[bytes]) -> list[dict]:
    return [orjson.loads(line) for line in lines]
