"""A worker's /metrics, /livez, /readyz and JSON logs, on a real worker process."""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from streams import events
from streams.topics import create_topics
from tests.conftest import ConfigFactory
from tests.workers import WorkerProcess, produce, wait_for_lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}}") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{wanted}}} not in metrics")


def test_metrics_health_and_json_logs(make_config: ConfigFactory, tmp_path: Path) -> None:
    port = free_port()
    path, cfg = make_config({"metrics": {"port": port}})
    create_topics(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    assert get(port, "/livez") == (200, "ok\n")
    deadline = time.monotonic() + 30
    while get(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get(port, "/readyz") == (200, "ready\n")
    rng = random.Random(2)
    values = [
        orjson.dumps(events.engine_execution(rng, "e1", 1_764_000_000_000 + i)) for i in range(300)
    ]
    produce(cfg, "engine-execution", [*values, b"{oops"])
    wait_for_lines(cfg, "engine_execution", 300, timeout=30)
    time.sleep(1)
    status, text = get(port, "/metrics")
    assert status == 200
    ch = {"channel": "engine_execution"}
    assert metric(text, "json_engine_events_received_total", **ch) == 301
    assert metric(text, "json_engine_events_valid_total", **ch) == 300
    assert metric(text, "json_engine_events_invalid_total", **ch) == 1
    assert metric(text, "json_engine_events_written_total", **ch) == 300
    assert metric(text, "json_engine_dead_letters_total", **ch) == 1
    assert metric(text, "json_engine_batches_flushed_total", **ch) >= 1
    assert metric(text, "json_engine_flush_seconds_count", **ch) >= 1
    assert "json_engine_consumer_lag" in text
    assert get(port, "/nope")[0] == 404
    assert worker.terminate() == 0
    logs = [json.loads(line) for line in worker.log().splitlines() if line.startswith(b"{")]
    assert logs and {"time", "level", "logger", "message"} <= set(logs[0])
    assert any("Ready" in entry["message"] for entry in logs)
