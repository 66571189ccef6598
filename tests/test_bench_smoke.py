"""`python -m bench --smoke` runs end to end on the session broker, so the benchmark cannot rot.

Its numbers are not asserted (a shared CI machine makes them noise); only that every smoke
contender ran and measured something.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALWAYS = {
    "confluent-raw",
    "confluent-parse",
    "confluent-parse-plain",
    "confluent-fjs",
    "confluent-fjs-plain",
    "json-engine-1w",
    "faust-naive",
}
JARS_NEEDED = {"consumer-perf"}  # skipped when Kafka's jars are not cached (Docker broker)


@pytest.mark.timeout(420)
def test_bench_smoke(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSON_ENGINE__")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    [path] = tmp_path.glob("*.json")
    assert (tmp_path / "latest.md").exists()
    record = json.loads(path.read_text())
    assert record["config"]["smoke"] is True
    rows = {row["name"]: row for row in record["contenders"]}
    assert set(rows) == ALWAYS | JARS_NEEDED, proc.stdout
    for name, row in rows.items():
        if name in JARS_NEEDED and row["errors"] and row["errors"][0].startswith("skipped"):
            continue
        assert row.get("events_per_s", 0) > 0, f"{name}: {row['errors']}\n{proc.stdout}"
