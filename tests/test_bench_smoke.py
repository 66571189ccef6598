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


def test_goal_ratios_per_repetition_skip_a_failed_side() -> None:
    """Adversary: a repetition that failed on one side (no rate) among ones that ran: it
    pairs with nothing, and the others pair in their rounds."""
    from bench.report import _per_repetition

    def row(*rates: float | None) -> dict:
        runs = [{"rate": r, "error": None if r else "timeout"} for r in rates]
        return {"runs": runs}

    mine, theirs = row(80.0, None, 90.0, 50.0), row(100.0, 100.0, None, 40.0)
    assert _per_repetition(mine, theirs, "events_per_s") == [0.8, 1.25]
    assert _per_repetition(mine, theirs, "peak_rss_mb") == []  # not a per-run figure


def test_stolen_cpu_is_part_of_the_busy_cpu() -> None:
    from bench.measure import machine_seconds

    busy, stolen = machine_seconds()
    assert 0 <= stolen <= busy
