"""The batch twin (oracle of the stream aggregator), its CLI functions and the HTML report.

Small inputs have hand-computed records; a seeded random input is checked against a plain
Python reference written here from the Contract's words, independent of the pandas code.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import typer
from jsonschema import Draft7Validator
from typer.testing import CliRunner

from schemas import schema_file
from sinks.files.names import finished_name
from sinks.offline.aggregate_batch import (
    aggregate_dir,
    aggregate_frames,
    load_comparisons,
    load_executions,
    untimed_comparisons,
    window_ms,
)
from sinks.offline.report import leaderboard, render_html
from sinks.reader import read_dataframe
from streams import events
from streams.cli.offline import aggregate, report
from streams.config import JsonEngineConfig

T0 = 1_764_300_000_000  # a multiple of 60 000 ms
MIN = 60_000
STATS_SCHEMA = Draft7Validator(orjson.loads(schema_file("aggregated_stats").read_bytes()))


# --- builders -----------------------------------------------------------------------------


def execution(engine: str, ts: int, latency: float, success: bool = True) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "trace_id": f"t-{engine}-{ts}-{latency}",
        "task_id": "task-1",
        "engine_id": engine,
        "engine_instance_id": f"{engine}-0",
        "timestamp": ts,
        "input": "in",
        "output": "out",
        "metrics": {
            "latency_ms": latency,
            "memory_mb": 1.0,
            "cpu_percent": 1.0,
            "success": success,
        },
        "status": "ok" if success else "error",
    }


def comparison(
    ts: int | None,
    candidates: list[tuple[str, float | None]],
    winner: str,
    winner_score: float,
) -> dict[str, Any]:
    cands = []
    for engine, score in candidates:
        cand: dict[str, Any] = {"engine_id": engine, "output": "o", "metrics": {}}
        if score is not None:
            cand["score"] = score
        cands.append(cand)
    record: dict[str, Any] = {
        "comparison_id": f"c-{ts}-{winner}",
        "query": "q",
        "candidates": cands,
        "winner": {"engine_id": winner, "score": winner_score},
        "metrics": {},
    }
    if ts is not None:
        record["timestamp"] = ts
    return record


def expected(
    engine: str,
    start: int,
    width: int,
    count: int = 0,
    success: int = 0,
    lat: tuple[float, ...] = (0.0,) * 6,
    quality: tuple[int, float | None] = (0, None),
    cmp: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """A record spelled out; lat = (min, max, avg, p50, p95, p99)."""
    return {
        "schema_version": 1,
        "engine_id": engine,
        "window_start": start,
        "window_end": start + width,
        "count": count,
        "success_count": success,
        "success_rate": success / count if count else 0.0,
        "latency_ms": dict(zip(("min", "max", "avg", "p50", "p95", "p99"), lat, strict=True)),
        "quality": {"count": quality[0], "mean": quality[1]},
        "comparisons": {
            "count": cmp[0],
            "wins": cmp[1],
            "win_rate": cmp[1] / cmp[0] if cmp[0] else 0.0,
        },
    }


def frames(
    executions: list[dict[str, Any]], comparisons: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shape `sinks.reader.read_dataframe` gives."""
    return pd.json_normalize(executions), pd.json_normalize(comparisons)


def write_parts(directory: Path, records: list[dict[str, Any]], partitions: int = 3) -> None:
    """Finished part files by hand, records spread round-robin over partitions."""
    directory.mkdir(parents=True, exist_ok=True)
    for p in range(partitions):
        mine = records[p::partitions]
        if mine:
            data = b"".join(orjson.dumps(r) + b"\n" for r in mine)
            (directory / finished_name(p, 100, 100 + len(mine) - 1)).write_bytes(data)


def write_output(base: Path, executions: list[dict], comparisons: list[dict]) -> None:
    write_parts(base / "events", executions)
    write_parts(base / "comparisons", comparisons)


# --- hand-computed records ----------------------------------------------------------------


def test_window_boundaries_and_lower_percentiles() -> None:
    ex = [
        execution("a", T0 + i * 1000, float(v))
        for i, v in enumerate([5, 1, 9, 3, 7, 2, 8, 4, 10, 6])
    ]
    ex += [
        execution("a", T0 + MIN - 1, 100.0, success=False),  # last ms of the first window
        execution("a", T0 + MIN, 20.0),  # exactly window_end: the next window
        execution("b", T0 - 1, 2.5),  # the window before
    ]
    got = aggregate_frames(*frames(ex, []), 1)
    # Window 1 of a: 1..10 and 100 → n=11; lower order statistics x[floor(q*10)].
    lat = (1.0, 100.0, 155 / 11, 6.0, 10.0, 10.0)
    assert got == [
        expected("b", T0 - MIN, MIN, 1, 1, (2.5,) * 6),
        expected("a", T0, MIN, 11, 10, lat),
        expected("a", T0 + MIN, MIN, 1, 1, (20.0,) * 6),
    ]
    assert [r["engine_id"] for r in got] == ["b", "a", "a"]  # sorted by window, then engine


def test_percentiles_match_numpy_lower() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 19, 20, 21, 100, 101, 1000):
        values = rng.lognormal(3.7, 0.6, n)
        ex = [execution("e", T0 + i, float(v)) for i, v in enumerate(values)]
        [rec] = aggregate_frames(*frames(ex, []), 1)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert rec["latency_ms"][name] == np.quantile(values, q, method="lower"), (n, name)


def test_fractional_window_minutes() -> None:
    assert window_ms(0.5) == 30_000
    assert window_ms(1 / 3) == 20_000
    assert window_ms(0.001) == 60
    with pytest.raises(ValueError):
        window_ms(0.000001)
    ex = [
        execution("a", T0 + 19_999, 1.0),
        execution("a", T0 + 20_000, 2.0),  # window_end of [T0, T0+20s): next window
        execution("a", T0 + 45_123, 3.0),
    ]
    got = aggregate_frames(*frames(ex, []), 1 / 3)
    assert [(r["window_start"], r["window_end"], r["count"]) for r in got] == [
        (T0, T0 + 20_000, 1),
        (T0 + 20_000, T0 + 40_000, 1),
        (T0 + 40_000, T0 + 60_000, 1),
    ]
    # 1.5 minutes: windows aligned to the epoch, not to the first event.
    [rec] = aggregate_frames(*frames([execution("a", T0, 1.0)], []), 1.5)
    assert (
        rec["window_start"] == T0 - T0 % 90_000
        and rec["window_end"] == rec["window_start"] + 90_000
    )


def test_quality_rules_and_comparisons_only_window() -> None:
    ex = [execution("a", T0 + 1, 10.0), execution("b", T0 + 2, 30.0, success=False)]
    cmps = [
        # a: own score 0.8 (not the winner's 0.9); b: no score, not the winner → none.
        comparison(T0 + 10, [("a", 0.8), ("b", None)], "a", 0.9),
        # b: no own score but wins → winner.score 0.7; a: nothing.
        comparison(T0 + 20, [("a", None), ("b", None)], "b", 0.7),
        # c appears only in comparisons, never scored, never wins; a scored 0.6, wins.
        comparison(T0 + 30, [("c", None), ("a", 0.6)], "a", 0.6),
        # Exactly at window_end: counts in the next window, where nobody executed.
        comparison(T0 + MIN, [("a", 0.5), ("c", 0.25)], "c", 0.25),
    ]
    got = aggregate_frames(*frames(ex, cmps), 1)
    assert got == [
        expected("a", T0, MIN, 1, 1, (10.0,) * 6, quality=(2, (0.8 + 0.6) / 2), cmp=(3, 2)),
        expected("b", T0, MIN, 1, 0, (30.0,) * 6, quality=(1, 0.7), cmp=(2, 1)),
        expected("c", T0, MIN, cmp=(1, 0)),  # comparisons only: count 0, latencies 0
        expected("a", T0 + MIN, MIN, quality=(1, 0.5), cmp=(1, 0)),
        expected("c", T0 + MIN, MIN, quality=(1, 0.25), cmp=(1, 1)),
    ]
    for rec in got:
        assert not list(STATS_SCHEMA.iter_errors(rec)), rec


def test_engine_listed_twice_counts_one_comparison() -> None:
    """comparisons.count counts comparisons; each candidate entry may give an observation."""
    cmps = [comparison(T0, [("a", 0.2), ("a", None), ("b", 0.4)], "a", 0.9)]
    got = aggregate_frames(*frames([], cmps), 1)
    assert got == [
        expected("a", T0, MIN, quality=(2, (0.2 + 0.9) / 2), cmp=(1, 1)),
        expected("b", T0, MIN, quality=(1, 0.4), cmp=(1, 0)),
    ]


def test_comparisons_without_timestamp_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    cmps = [comparison(None, [("a", 0.5)], "a", 0.5), comparison(T0, [("b", None)], "b", 0.3)]
    _, frame = frames([], cmps)
    assert untimed_comparisons(frame) == 1
    got = aggregate_frames(pd.DataFrame(), frame, 1)
    assert got == [expected("b", T0, MIN, quality=(1, 0.3), cmp=(1, 1))]
    assert "1 comparisons without timestamp" in caplog.text
    only_untimed = frames([], cmps[:1])[1]
    assert untimed_comparisons(only_untimed) == 1  # no timestamp column at all
    assert aggregate_frames(pd.DataFrame(), only_untimed, 1) == []


def test_empty_inputs() -> None:
    assert aggregate_frames(pd.DataFrame(), pd.DataFrame(), 1) == []


def test_input_shapes_agree(tmp_path: Path) -> None:
    """read_dataframe frames, the lean loaders and nested-object columns give the same records."""
    rng = random.Random(5)
    ex = [
        events.engine_execution(rng, rng.choice("xyz"), T0 + rng.randrange(300_000))
        for _ in range(300)
    ]
    cmps = [events.comparison_result(rng, "xyz", T0 + rng.randrange(300_000)) for _ in range(80)]
    write_output(tmp_path, ex, cmps)
    lean = aggregate_frames(
        load_executions(tmp_path / "events"), load_comparisons(tmp_path / "comparisons"), 1
    )
    flat = aggregate_frames(
        read_dataframe(tmp_path / "events"), read_dataframe(tmp_path / "comparisons"), 1
    )
    nested = aggregate_frames(pd.DataFrame(ex), pd.DataFrame(cmps), 1)
    assert lean == flat == nested == aggregate_dir(tmp_path, 1)
    assert len(lean) == 15


def test_aggregate_dir_follows_configured_channels(tmp_path: Path) -> None:
    cfg = JsonEngineConfig.model_validate(
        {
            "channels": {
                "engine_execution": {"filename": "runs.jsonl"},
                "comparison_result": {"filename": "judged.jsonl"},
            },
            "aggregation": {"window_minutes": 0.5},
        }
    )
    write_parts(tmp_path / "runs", [execution("a", T0 + 31_000, 4.0)])
    write_parts(tmp_path / "judged", [comparison(T0 + 1, [("a", 0.5)], "a", 0.5)])
    (tmp_path / "runs" / ".p000-000000000200-000000000200-10.inprogress").write_bytes(
        orjson.dumps(execution("a", T0, 1.0)) + b"\n"  # hidden work in progress: not read
    )
    got = aggregate_dir(tmp_path, config=cfg)
    assert got == [
        expected("a", T0, 30_000, quality=(1, 0.5), cmp=(1, 1)),
        expected("a", T0 + 30_000, 30_000, 1, 1, (4.0,) * 6),
    ]
    assert [r["window_end"] - r["window_start"] for r in aggregate_dir(tmp_path, 2, cfg)] == [
        120_000
    ]


# --- random input against a plain reference -----------------------------------------------


def reference(
    executions: list[dict[str, Any]], comparisons: list[dict[str, Any]], minutes: float
) -> list[dict[str, Any]]:
    """The Contract read literally, one event at a time."""
    width = round(minutes * 60_000)
    lat: dict[tuple[str, int], list[float]] = defaultdict(list)
    ok: dict[tuple[str, int], int] = defaultdict(int)
    for e in executions:
        key = (e["engine_id"], e["timestamp"] - e["timestamp"] % width)
        lat[key].append(e["metrics"]["latency_ms"])
        ok[key] += e["metrics"]["success"] is True
    cmp: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    obs: dict[tuple[str, int], list[float]] = defaultdict(list)
    for c in comparisons:
        if "timestamp" not in c:
            continue
        start = c["timestamp"] - c["timestamp"] % width
        winner = c["winner"]["engine_id"]
        for cand in c["candidates"]:
            score = cand.get("score")
            if score is None and cand["engine_id"] == winner:
                score = c["winner"]["score"]
            if score is not None:
                obs[(cand["engine_id"], start)].append(score)
        for engine in {cand["engine_id"] for cand in c["candidates"]}:
            cmp[(engine, start)][0] += 1
            cmp[(engine, start)][1] += engine == winner
    out = []
    for engine, start in sorted(lat.keys() | cmp.keys(), key=lambda k: (k[1], k[0])):
        xs = sorted(lat.get((engine, start), []))
        n = len(xs)
        q = obs.get((engine, start), [])
        count, wins = cmp.get((engine, start), (0, 0))
        out.append(
            expected(
                engine,
                start,
                width,
                n,
                ok.get((engine, start), 0),
                (
                    xs[0],
                    xs[-1],
                    sum(xs) / n,
                    *(xs[math.floor(p * (n - 1))] for p in (0.5, 0.95, 0.99)),
                )
                if n
                else (0.0,) * 6,
                quality=(len(q), sum(q) / len(q) if q else None),
                cmp=(count, wins),
            )
        )
    return out


def random_events(seed: int, minutes: float) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    width = round(minutes * 60_000)
    engines = [*events.ENGINE_IDS, "solo-comparer"]
    span = 40 * width
    times = [T0 + rng.randrange(span) for _ in range(6000)]
    times += [T0 + k * width + d for k in range(40) for d in (-1, 0)]  # on the boundaries
    ex = [events.engine_execution(rng, rng.choice(events.ENGINE_IDS), ts) for ts in times]
    for e in rng.sample(ex, 50):
        e["metrics"]["latency_ms"] = 7  # ties and integers
    cmps = []
    for _ in range(2000):
        c = events.comparison_result(rng, engines, T0 + rng.randrange(span))
        roll = rng.random()
        if roll < 0.05:
            del c["timestamp"]
        elif roll < 0.10:  # an engine listed twice, with or without a score
            dup = dict(rng.choice(c["candidates"]))
            if rng.random() < 0.5:
                dup.pop("score", None)
            else:
                dup["score"] = rng.random()
            c["candidates"].append(dup)
        cmps.append(c)
    return ex, cmps


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Exact equality, except sums divided by counts: their float summation order differs."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        g, w = orjson.loads(orjson.dumps(g)), orjson.loads(orjson.dumps(w))
        assert math.isclose(g["latency_ms"].pop("avg"), w["latency_ms"].pop("avg"), rel_tol=1e-12)
        gm, wm = g["quality"].pop("mean"), w["quality"].pop("mean")
        assert (gm is None) == (wm is None) and (gm is None or math.isclose(gm, wm, rel_tol=1e-12))
        assert g == w


@pytest.mark.parametrize(("seed", "minutes"), [(1, 1), (2, 0.25), (3, 7 / 60)])
def test_random_input_matches_reference(tmp_path: Path, seed: int, minutes: float) -> None:
    ex, cmps = random_events(seed, minutes)
    want = reference(ex, cmps, minutes)
    assert_same(aggregate_frames(*frames(ex, cmps), minutes), want)
    write_output(tmp_path, ex, cmps)
    from_files = aggregate_dir(tmp_path, minutes)
    assert_same(from_files, want)
    assert {r["engine_id"] for r in from_files} >= {"solo-comparer"}
    assert any(r["count"] == 0 for r in from_files)
    for rec in from_files:
        assert not list(STATS_SCHEMA.iter_errors(rec)), rec


def test_a_million_executions_in_seconds() -> None:
    n = 1_000_000
    rng = np.random.default_rng(11)
    engines = np.array(events.ENGINE_IDS, dtype=object)
    ex = pd.DataFrame(
        {
            "engine_id": engines[rng.integers(0, len(engines), n)],
            "timestamp": T0 + rng.integers(0, 3_600_000, n),
            "metrics.latency_ms": rng.lognormal(3.7, 0.6, n),
            "metrics.success": rng.random(n) < 0.95,
        }
    )
    started = time.perf_counter()
    got = aggregate_frames(ex, pd.DataFrame(), 1)
    assert time.perf_counter() - started < 20
    assert len(got) == 60 * len(engines) and sum(r["count"] for r in got) == n


# --- the CLI functions, registered on a throwaway app ---------------------------------------


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("aggregate")(aggregate)
    app.command("report")(report)
    return app


def small_output(base: Path) -> tuple[list[dict], list[dict]]:
    ex = [execution(e, T0 + i * 7_000, 10.0 + i, i % 4 != 0) for i in range(30) for e in ("a", "b")]
    cmps = [
        comparison(T0 + i * 11_000, [("a", 0.5 + i / 100), ("b", None)], "ab"[i % 2], 0.8)
        for i in range(20)
    ]
    write_output(base, ex, cmps)
    return ex, cmps


def test_cli_aggregate_stdout_and_out(app: typer.Typer, tmp_path: Path) -> None:
    small_output(tmp_path)
    runner = CliRunner()
    result = runner.invoke(
        app, ["aggregate", "--from-files", str(tmp_path), "--window-minutes", "0.5"]
    )
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert lines == aggregate_dir(tmp_path, 0.5)
    assert "records from 60 executions and 20 comparisons" in result.stderr

    out = tmp_path / "agg.jsonl"
    result = runner.invoke(app, ["aggregate", "--from-files", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == aggregate_dir(tmp_path)


def test_cli_aggregate_uses_config_and_rejects_bad_input(app: typer.Typer, tmp_path: Path) -> None:
    small_output(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text("json_engine:\n  aggregation: {window_minutes: 2}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["aggregate", "--from-files", str(tmp_path), "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert {
        orjson.loads(line)["window_end"] - orjson.loads(line)["window_start"]
        for line in result.stdout.splitlines()
    } == {120_000}
    result = runner.invoke(
        app, ["aggregate", "--from-files", str(tmp_path), "--window-minutes", "0"]
    )
    assert result.exit_code == 2
    result = runner.invoke(app, ["aggregate", "--from-files", str(tmp_path / "missing")])
    assert result.exit_code == 2
    config.write_text("json_engine:\n  aggregation: {window_minutes: -1}\n")
    result = runner.invoke(app, ["aggregate", "--from-files", str(tmp_path), "-c", str(config)])
    assert result.exit_code == 2 and "window_minutes" in result.stderr


def test_cli_report_prefers_aggregated_stats(app: typer.Typer, tmp_path: Path) -> None:
    small_output(tmp_path)
    runner = CliRunner()
    page = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(tmp_path), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert "recomputed" in result.stdout
    assert page.read_text().count("<svg") == 6  # 2 engines, 3 charts each

    streamed = [expected("from-stream", T0, MIN, 3, 3, (1.0, 3.0, 2.0, 2.0, 3.0, 3.0))]
    write_parts(tmp_path / "aggregated_stats", streamed, partitions=1)
    result = runner.invoke(app, ["report", str(tmp_path), "--html", str(page), "--title", "T"])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "from-stream" in html and html.count("<svg") == 3 and "<title>T</title>" in html
    # An explicit window asks for a recomputation.
    result = runner.invoke(
        app, ["report", str(tmp_path), "--html", str(page), "--window-minutes", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "from-stream" not in page.read_text()


def test_cli_report_with_nothing_exits_1(app: typer.Typer, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--html", str(page)])
    assert result.exit_code == 1 and "nothing to report" in result.stderr
    assert not page.exists()


# --- the HTML report --------------------------------------------------------------------------


def test_report_is_self_contained_escaped_and_complete() -> None:
    evil = "<script>alert('x')</script>"
    ex = [
        execution(e, T0 + i * 9_000, 5.0 + i * (1 + 300 * (e == "slow")), i % 5 != 0)
        for i in range(40)
        for e in ("fast", "slow", evil)
    ]
    cmps = [
        comparison(
            T0 + i * 13_000,
            [("fast", 0.9), (evil, None), ("slow", 0.1)],
            "fast" if i % 3 else evil,
            0.95,
        )
        for i in range(25)
    ]
    cmps.append(comparison(T0 + 30 * MIN, [("judged-only", 0.3), ("slow", None)], "slow", 0.4))
    records = aggregate_frames(*frames(ex, cmps), 1)
    page = render_html(records, title="Report <&>")

    assert "<script" not in page and "alert(&#x27;x&#x27;)" in page
    assert "&lt;script&gt;" in page and "<title>Report &lt;&amp;&gt;</title>" in page
    engines = {"fast", "slow", evil, "judged-only"}
    assert page.count("<svg") == 3 * len(engines)
    for engine in engines:
        assert f'aria-label="latency of {escape(engine)}"' in page
    assert page.count('class="engine-row"') == len(engines)
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]*)""", page, flags=re.I)
    assert links and all(link.startswith("#") for link in links)
    assert not re.search(r"<(?:link|img|iframe|object|embed)\b|@import|url\(", page, flags=re.I)
    assert "http" not in page.lower()

    board = leaderboard(records)
    fast = board[0]
    assert fast["engine_id"] == "fast"  # best win rate first
    assert fast["win_rate"] == fast["wins"] / fast["comparisons"] and fast[
        "quality_mean"
    ] == pytest.approx(0.9)
    assert next(b for b in board if b["engine_id"] == "judged-only")["count"] == 0
    table = page[page.index("<table>") : page.index("</table>")]
    assert table.index(">fast<") < table.index(">slow<")


def test_report_without_records() -> None:
    page = render_html([], "empty")
    assert "No aggregated windows" in page and "<svg" not in page


def test_late_rows_follow_each_partitions_own_order() -> None:
    from sinks.offline.aggregate_batch import late_rows

    width, grace = 1000, 500
    frame = pd.DataFrame(
        {
            # partition 0 reaches 2600 first: 10 is late there (0 + 1000 + 500 <= 2600);
            # partition 1 only reaches 1400: the same 10 is not late; 1499 closes nothing.
            "timestamp": [2600, 10, 1400, 10, 1499],
            "partition": [0, 0, 1, 1, 1],
        }
    )
    assert late_rows(frame, width, grace).tolist() == [False, True, False, False, False]
    assert not late_rows(frame.drop(columns="partition"), width, grace).any()
