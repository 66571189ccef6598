"""Prices and cost (issue 26): which price, tokens counted once, unknown cost, bad tables, and
the cost in the aggregates of a real worker equal to the twin's, recomputed by a backfill with
a new table that changes nothing but the cost."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import yaml

from sinks.offline.aggregate_batch import aggregate_frames
from streams.config import ConfigError, PricingConfig, load_config, load_price_file
from streams.pricing.table import PriceTable
from streams.topics import create_topics
from tests.conftest import ConfigFactory
from tests.test_aggregator import AGG, FAST, T0, WIDTH, execution, publish
from tests.workers import WorkerProcess, records, wait_for_lines


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


TABLE = {
    "currency": "EUR",
    "prices": [
        {"engine": "gpt-*", "valid_from": "2025-01-01", "input": 2.0, "output": 8.0},
        {"engine": "gpt-4o", "valid_from": "2025-06-01", "input": 2.5, "output": 10.0},
        {"engine": "gpt-4o", "valid_from": "2025-09-01T12:00:00", "input": 1.0, "output": 4.0,
         "cached_input": 0.25, "cache_write_input": 1.25, "reasoning_output": 20.0},
        {"engine": "gpt-*", "valid_from": "2025-01-01", "input": 99.0, "output": 99.0},
    ],
}  # fmt: skip


def table() -> PriceTable:
    return PriceTable.of(PricingConfig(**TABLE))


@pytest.mark.parametrize(
    ("engine", "when", "expected"),
    [
        ("gpt-4o", "2024-12-31", None),  # before every valid_from
        ("gpt-4o", "2025-03-01", 2.0),  # only the glob is valid yet
        ("gpt-4o", "2025-06-01", 2.5),  # an exact name beats a glob, from its first ms
        ("gpt-4o", "2025-09-01T11:59:59.999", 2.5),
        ("gpt-4o", "2025-09-01T12:00:00", 1.0),  # the latest valid_from not after the time
        ("gpt-5-mini", "2026-01-01", 2.0),  # globs tied on valid_from: the first listed
        ("claude-3", "2026-01-01", None),
        ("GPT-4o", "2026-01-01", None),  # names are case-sensitive
    ],
)
def test_the_price_of_an_engine_at_a_time(engine: str, when: str, expected: float | None) -> None:
    price = table().price(engine, ms(when))
    assert (price.input if price is not None else None) == expected


def record(engine: str, when: str, executions: int, **tokens: int) -> dict[str, Any]:
    found: dict[str, Any] = {"engine_id": engine, "window_start": ms(when), "count": executions}
    if tokens:
        found["tokens"] = tokens
    return found


def test_cached_and_reasoning_tokens_count_once_and_missing_tokens_are_unknown() -> None:
    """Adversary: tokens that are parts of others (cache reads and writes inside input,
    reasoning inside output), executions without tokens, engines without a price."""
    prices = table()
    cost = prices.cost(
        record(
            "gpt-4o",
            "2025-10-01",
            10,
            input=1000,
            output=500,
            count=8,
            cache_read_input=200,
            cache_write_input=100,
            reasoning_output=50,
        )
    )
    assert cost["currency"] == "EUR"
    assert (cost["priced"], cost["unpriced"]) == (8, 2)
    parts = {
        "input": 700 * 1.0 / 1e6,
        "cache_read_input": 200 * 0.25 / 1e6,
        "cache_write_input": 100 * 1.25 / 1e6,
        "output": 450 * 4.0 / 1e6,
        "reasoning_output": 50 * 20.0 / 1e6,
    }
    for name, value in parts.items():
        assert cost[name] == pytest.approx(value, rel=1e-12), name
    assert cost["total"] == pytest.approx(sum(parts.values()), rel=1e-12)
    # Without their own prices, cached input costs the input price and reasoning is output.
    plain = prices.cost(
        record("gpt-5", "2025-10-01", 3, input=1000, output=500, count=3, cache_read_input=400)
    )
    assert plain["total"] == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6, rel=1e-12)
    assert plain["reasoning_output"] == 0.0
    # No tokens reported, or no price: unknown, never zero.
    for unknown in (record("gpt-4o", "2025-10-01", 7), record("claude", "2025-10-01", 7, input=5,
                                                               output=5, count=7)):  # fmt: skip
        assert prices.cost(unknown) == {
            "currency": "EUR",
            "priced": 0,
            "unpriced": 7,
        }


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"engine": "e", "valid_from": "someday", "input": 1, "output": 1}, "prices.0.valid_from"),
        ({"engine": "e", "valid_from": "2025-01-01", "input": -1, "output": 1}, "prices.0.input"),
        ({"engine": "", "valid_from": "2025-01-01", "input": 1, "output": 1}, "prices.0.engine"),
        ({"engine": "e", "valid_from": "2025-01-01", "output": 1}, "prices.0.input"),
        ({"engine": "e", "valid_from": "2025-01-01", "input": 1, "output": 1, "x": 1},
         "prices.0.x"),
    ],
)  # fmt: skip
def test_a_bad_table_names_its_key(entry: dict[str, Any], key: str, tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump({"currency": "USD", "prices": [entry]}))
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_price_file(path)
    config = tmp_path / "json-engine.yaml"
    config.write_text(yaml.safe_dump({"json_engine": {"pricing": {"prices": [entry]}}}))
    with pytest.raises(ConfigError, match=re.escape(f"pricing.{key}")):
        load_config(config)


def test_the_config_names_a_price_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump(TABLE))
    config = tmp_path / "json-engine.yaml"
    config.write_text(yaml.safe_dump({"json_engine": {"pricing": {"file": str(prices)}}}))
    loaded = load_config(config).pricing
    assert loaded is not None and loaded.currency == "EUR" and len(loaded.prices) == 4
    both = {"json_engine": {"pricing": {"file": str(prices), "prices": TABLE["prices"]}}}
    config.write_text(yaml.safe_dump(both))
    with pytest.raises(ConfigError, match="prices or file, not both"):
        load_config(config)
    config.write_text(yaml.safe_dump({"json_engine": {"pricing": {"file": "missing.yaml"}}}))
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config(config)


def priced(rng: random.Random, engine: str, ts: int) -> dict[str, Any]:
    """An execution that reports tokens most of the time, and their parts some of the time."""
    event = execution(rng, engine, ts)
    metrics = event["metrics"]
    if rng.random() < 0.8:
        metrics["input_tokens"] = rng.randrange(100, 2000)
        metrics["output_tokens"] = rng.randrange(10, 800)
        if rng.random() < 0.5:
            metrics["cache_read_input_tokens"] = rng.randrange(0, 100)
        if rng.random() < 0.3:
            metrics["reasoning_output_tokens"] = rng.randrange(0, 10)
    return event


def test_the_streamed_cost_equals_the_twins_and_a_backfill_changes_only_the_cost(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """A real worker prices every window it emits (the sink validates the records, so a cost
    outside the schema would be a dead letter); the twin prices the same windows the same;
    `aggregate --from-files --prices` with another table changes the cost and nothing else."""
    table_file = tmp_path / "prices.yaml"
    table_file.write_text(yaml.safe_dump(TABLE))
    path, cfg = make_config(
        {
            "kafka": {"partitions": 1},
            "aggregation": AGG,
            "channels": FAST,
            "training": {"enabled": False},
            "pricing": {"file": str(table_file)},
        }
    )
    assert ms("2025-09-02") < T0  # gpt-4o's latest entry prices every window
    create_topics(cfg)
    worker = WorkerProcess(path, tmp_path).start()
    rng = random.Random(26)
    engines = ["gpt-4o", "gpt-5", "claude"]
    execs = [
        priced(rng, engine, T0 + w * WIDTH + rng.randrange(WIDTH))
        for w in range(4)
        for engine in engines
        for _ in range(20)
    ]
    execs.sort(key=lambda e: e["timestamp"])
    publish(cfg, [*execs, execution(rng, "gpt-4o", T0 + 5 * WIDTH + 1000)], [])
    streamed = records(wait_for_lines(cfg, "aggregated_stats", 4 * len(engines), timeout=60))
    assert worker.terminate() == 0
    twin = {
        (r["engine_id"], r["window_start"]): r
        for r in aggregate_frames(pd.json_normalize(execs), pd.DataFrame(), 0.05, None, table())
    }
    for r in streamed:
        assert r["cost"] == twin[r["engine_id"], r["window_start"]]["cost"]
    assert {"total" in r["cost"] for r in streamed if r["engine_id"] == "claude"} == {False}
    assert all(r["cost"]["total"] > 0 for r in streamed if r["engine_id"] != "claude")

    def backfill(prices: Path) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", "aggregate", "--config", str(path),
             "--from-files", str(cfg.output.base_path), "--prices", str(prices)],
            capture_output=True,
            timeout=120,
        )  # fmt: skip

    cheaper = tmp_path / "cheaper.yaml"
    cheaper.write_text(
        yaml.safe_dump(
            {
                "currency": "EUR",
                "prices": [{"engine": "*", "valid_from": "2020-01-01", "input": 1, "output": 1}],
            }
        )
    )
    before, after = backfill(table_file), backfill(cheaper)
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    old = [orjson.loads(line) for line in before.stdout.splitlines()]
    new = [orjson.loads(line) for line in after.stdout.splitlines()]
    assert len(old) == len(new) >= 4 * len(engines)
    for a, b in zip(old, new, strict=True):
        assert {k: v for k, v in a.items() if k != "cost"} == {
            k: v for k, v in b.items() if k != "cost"
        }
        tokens = b.get("tokens")
        if tokens:
            assert b["cost"]["total"] == pytest.approx(
                (tokens["input"] + tokens["output"]) / 1e6, rel=1e-12
            )
    assert any(a["cost"] != b["cost"] for a, b in zip(old, new, strict=True))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"prices": [{"engine": "*", "valid_from": "x", "input": 1}]}))
    failed = backfill(bad)
    assert failed.returncode == 2
    assert b"prices.0.valid_from" in failed.stderr and b"prices.0.output" in failed.stderr
