"""Rating against cost (issue 26): the frontier of engines no other engine beats on both.

Adversaries: ties on both axes (neither beats the other), an engine whose cost is unknown
(no price: never on or off the frontier, never counted as free), engines of two groups that
never met (ratings that cannot be compared), and windows outside the leaderboard's period
(their cost must not count)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from typer.testing import CliRunner

from sinks.files.buckets import bucket_of
from sinks.files.names import finished_name
from sinks.offline.aggregate_batch import aggregate_frames
from sinks.offline.frontier import add_frontier
from sinks.offline.leaderboard import comparisons_from
from sinks.offline.report import leaderboard as totals
from sinks.offline.report import render_html
from streams.cli import app
from streams.config import PricingConfig
from streams.pricing.table import PriceTable
from tests.test_leaderboard import DAY_MS, HOUR_8, simulate, write_comparisons


def row(engine: str, rating: float | None) -> dict[str, Any]:
    return {"engine_id": engine, "rating": rating}


def total(engine: str, cost_per_1000: float | None) -> dict[str, Any]:
    return {"engine_id": engine, "cost_per_1000": cost_per_1000, "currency": "USD",
            "p95_ms": 100.0, "success_rate": 0.99, "count": 10}  # fmt: skip


def test_an_engine_is_on_the_frontier_when_none_rates_higher_for_less() -> None:
    rows = [row("best", 1100), row("twin", 1100), row("cheap", 1050), row("worse", 1000),
            row("unpriced", 1200), row("unrated", None), row("apart", 900)]  # fmt: skip
    costs = {"best": 1.0, "twin": 1.0, "cheap": 0.5, "worse": 2.0, "unpriced": None,
             "unrated": 0.01, "apart": 50.0}  # fmt: skip
    groups = {"best": 0, "twin": 0, "cheap": 0, "worse": 0, "unpriced": 0, "apart": 1}
    add_frontier(rows, [total(e, c) for e, c in costs.items()], groups)
    marked = {r["engine_id"]: r["frontier"] for r in rows}
    assert marked == {
        "best": True,  # tied with twin on both: neither beats the other
        "twin": True,
        "cheap": True,  # the cheapest of its group
        "worse": False,  # best rates higher for less
        "unpriced": None,  # unknown cost is not zero: neither on nor off
        "unrated": None,
        "apart": True,  # alone in its group: its rating compares with no one's
    }
    assert rows[0]["cost_per_1000"] == 1.0 and rows[0]["p95_ms"] == 100.0


PRICES = PricingConfig(
    currency="USD",
    prices=[
        {"engine": "strong", "valid_from": "2020-01-01", "input": 10.0, "output": 30.0},
        {"engine": "cheap", "valid_from": "2020-01-01", "input": 0.1, "output": 0.4},
        {"engine": "pricey", "valid_from": "2020-01-01", "input": 20.0, "output": 60.0},
    ],
)


def executions(rng: np.random.Generator, start: int, span: int) -> list[dict[str, Any]]:
    found = []
    for k, ts in enumerate(np.sort(rng.integers(start, start + span, size=3000))):
        engine = ["strong", "cheap", "pricey", "free"][k % 4]
        metrics = {
            "latency_ms": float(rng.lognormal(4, 0.5)),
            "success": bool(rng.random() < 0.97),
            "input_tokens": int(rng.integers(100, 900)),
            "output_tokens": int(rng.integers(50, 400)),
        }
        found.append({"engine_id": engine, "timestamp": int(ts), "metrics": metrics})
    return found


def write_stats(base: Path, records: list[dict[str, Any]]) -> None:
    """aggregated_stats part files, one per hour bucket, as the sink leaves them."""
    by_bucket: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_bucket.setdefault(bucket_of(r["window_start"]), []).append(r)
    offset = 0
    for bucket, lines in sorted(by_bucket.items()):
        folder = base / "aggregated_stats" / bucket
        folder.mkdir(parents=True, exist_ok=True)
        name = finished_name(0, offset, offset + len(lines) - 1)
        (folder / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
        offset += len(lines)


def test_the_leaderboard_and_the_report_give_the_frontier_of_the_same_period(
    tmp_path: Path,
) -> None:
    """strong wins most but costs; cheap wins least for little; pricey is beaten by strong on
    both; free has no price. A day before the period, pricey was cheap: outside --since."""
    rng = np.random.default_rng(26)
    names = ["strong", "cheap", "pricey", "free"]
    events = simulate(np.array([1.0, -0.5, 0.5, 0.0]), 1200, rng, names, span=DAY_MS)
    write_comparisons(tmp_path, events)
    table = PriceTable.of(PRICES)
    stats = aggregate_frames(
        pd.json_normalize(executions(rng, HOUR_8, DAY_MS)), pd.DataFrame(), 60, None, table
    )
    before = [dict(r, window_start=r["window_start"] - 2 * DAY_MS,
                   window_end=r["window_end"] - 2 * DAY_MS,
                   cost={**r["cost"], "total": 0.0} if "cost" in r else None)
              for r in stats if r["engine_id"] == "pricey"]  # fmt: skip
    write_stats(tmp_path, stats + before)
    result = CliRunner().invoke(
        app, ["leaderboard", str(tmp_path), "-f", "json", "--seed", "1", "--since", str(HOUR_8)]
    )
    assert result.exit_code == 0, result.output
    rows = {r["engine_id"]: r for r in orjson.loads(result.stdout)}
    expected = {t["engine_id"]: t for t in totals(stats)}  # the period's windows only
    for engine, r in rows.items():
        assert r["cost_per_1000"] == expected[engine]["cost_per_1000"]
        assert r["p95_ms"] == expected[engine]["p95_ms"]
        assert r["success_rate"] == expected[engine]["success_rate"]
        assert r["executions"] == expected[engine]["count"]
    assert rows["free"]["cost_per_1000"] is None and rows["free"]["frontier"] is None
    assert rows["strong"]["rating"] > rows["pricey"]["rating"] > rows["cheap"]["rating"]
    assert {e: rows[e]["frontier"] for e in ("strong", "cheap", "pricey")} == {
        "strong": True,
        "cheap": True,
        "pricey": False,
    }

    page = render_html(stats, "frontier", comparisons_from(events))
    section = page[page.index("<h2>Rating against cost</h2>") :]
    section = section[: section.index("<h2>", 10)]
    assert 'aria-label="rating against cost"' in section
    assert section.count("★ yes") == 2 and "Without a known cost or a rating: free" in section
