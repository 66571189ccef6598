"""The Bradley-Terry leaderboard (issue 16): the fit against known strengths and against an
independent fit, the bootstrap's coverage and its equivalence to resampling comparison rows,
the edge cases, `json-engine leaderboard` on real part files, and the HTML report's part."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.optimize import minimize
from typer.testing import CliRunner

from sinks.files.buckets import HOUR_MS, bucket_of
from sinks.files.names import IN_PROGRESS_DIR, finished_name
from sinks.offline.aggregate_batch import aggregate_dir
from sinks.offline.frontier import FIELDS as FRONTIER_FIELDS
from sinks.offline.leaderboard import (
    FIELDS,
    RIDGE,
    SCALE,
    BradleyTerry,
    Comparisons,
    comparisons_from,
    rate,
    to_ratings,
)
from sinks.offline.leaderboard.battles import pattern_battles
from sinks.offline.report import render_html
from streams.cli import app

HOUR_8 = 1_800_000_000_000  # 2027-01-15 08:00:00 UTC
DAY_MS = 24 * HOUR_MS

COLUMNS = (*FIELDS, *FRONTIER_FIELDS)  # the rating, then the frontier (issue 26)


def comparison(k: int, candidates: Sequence[str], winner: str, ts: int | None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "comparison_id": f"c-{k}",
        "query": f"q{k}",
        "candidates": [{"engine_id": e, "output": f"o-{e}", "metrics": {}} for e in candidates],
        "winner": {"engine_id": winner, "score": 0.7},
        "metrics": {},
    }
    if ts is not None:
        event["timestamp"] = ts
    return event


def simulate(
    beta: np.ndarray,
    n: int,
    rng: np.random.Generator,
    names: Sequence[str] | None = None,
    start: int = HOUR_8,
    span: int = HOUR_MS,
    sizes: Sequence[int] = (2,),
) -> list[dict[str, Any]]:
    """n comparisons of random distinct engines; the winner by the Luce model (BT for 2)."""
    names = names or [f"e{i}" for i in range(len(beta))]
    events = []
    times = np.sort(rng.integers(start, start + span, size=n))
    for k in range(n):
        size = int(rng.choice(sizes))
        chosen = rng.choice(len(beta), size=size, replace=False)
        weights = np.exp(beta[chosen])
        winner = int(rng.choice(chosen, p=weights / weights.sum()))
        events.append(comparison(k, [names[c] for c in chosen], names[winner], int(times[k])))
    return events


def truth(beta: np.ndarray) -> np.ndarray:
    return 1000 + SCALE * (beta - beta.mean())


def by_id(board: Any) -> dict[str, Any]:
    return {e.engine_id: e for e in board.entries}


# --- files and the CLI --------------------------------------------------------------------


def write_comparisons(base: Path, events: Sequence[dict[str, Any]], partitions: int = 2) -> Path:
    """Finished part files in hourly buckets of `base/comparisons/`, as the sink leaves them."""
    directory = base / "comparisons"
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for k, event in enumerate(events):
        bucket = bucket_of(event.get("timestamp", HOUR_8))
        groups.setdefault((bucket, k % partitions), []).append(event)
    offsets = [0] * partitions
    for (bucket, partition), lines in sorted(groups.items()):
        folder = directory / bucket
        folder.mkdir(parents=True, exist_ok=True)
        first = offsets[partition]
        offsets[partition] += len(lines)
        name = finished_name(partition, first, first + len(lines) - 1)
        (folder / name).write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))
    # Work in progress is hidden and never read.
    hidden = directory / IN_PROGRESS_DIR
    hidden.mkdir(exist_ok=True)
    (hidden / "p000-0000000001-000000000999-2027011508.part").write_bytes(b'{"torn": ')
    return directory


def run(*args: str) -> Any:
    result = CliRunner().invoke(app, ["leaderboard", *args])
    assert result.exit_code == 0, result.output + result.stderr
    return result


def json_rows(*args: str) -> list[dict[str, Any]]:
    return orjson.loads(run(*args, "--format", "json").stdout)


# --- battles ------------------------------------------------------------------------------


def test_battles_are_the_winner_against_each_other_candidate() -> None:
    events = [
        # a beats b twice (listed twice) and c once; a's second entry gives no battle
        comparison(0, ["a", "b", "b", "a", "c"], "a", HOUR_8),
        comparison(1, ["b", "c"], "c", HOUR_8),
        comparison(2, ["c", "c"], "c", HOUR_8),  # one engine only: no battle
        comparison(3, ["d"], "d", HOUR_8),  # alone: no battle, d is listed apart
    ]
    board = rate(comparisons_from(events), bootstrap=0)
    entries = by_id(board)
    assert (entries["a"].battles, entries["a"].wins) == (3, 3)
    assert (entries["b"].battles, entries["b"].wins) == (3, 0)
    assert (entries["c"].battles, entries["c"].wins) == (2, 1)
    assert board.battles == 4 and board.comparisons == 4
    assert [(e.engine_id, e.reason) for e in board.excluded] == [("d", "no battles")]
    assert board.pairwise.sum() == 4
    assert entries["c"].win_rate == 0.5


# --- the fit ------------------------------------------------------------------------------


def reference_ratings(events: Sequence[dict[str, Any]]) -> dict[str, float]:
    """An independent fit: battles counted here, the BT log-likelihood written here, no ridge,
    β of the first engine fixed at 0, minimized by scipy's BFGS with the exact gradient."""
    names = sorted({c["engine_id"] for e in events for c in e["candidates"]})
    index = {n: i for i, n in enumerate(names)}
    wins = np.zeros((len(names), len(names)))
    for e in events:
        w = e["winner"]["engine_id"]
        for c in e["candidates"]:
            if c["engine_id"] != w:
                wins[index[w], index[c["engine_id"]]] += 1

    total = wins.sum()

    def negative_log_likelihood(free: np.ndarray) -> tuple[float, np.ndarray]:
        """Per battle, so that the tolerance does not depend on how many there are."""
        beta = np.concatenate([[0.0], free])
        diff = beta[:, None] - beta[None, :]
        nll = float(np.sum(wins * np.logaddexp(0.0, -diff)))
        p_loss = 1.0 / (1.0 + np.exp(diff))  # P(j beats i) at [i, j]
        grad = -(wins * p_loss).sum(axis=1) + (wins * p_loss).sum(axis=0)
        return nll / total, grad[1:] / total

    found = minimize(
        negative_log_likelihood,
        np.zeros(len(names) - 1),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-9},
    )
    assert np.abs(found.jac).max() < 1e-7, found.message  # at the optimum
    beta = np.concatenate([[0.0], found.x])
    return dict(zip(names, truth(beta), strict=True))


def test_fit_equals_an_independent_fit_within_half_a_point() -> None:
    rng = np.random.default_rng(11)
    beta = rng.normal(0, 0.8, 8)
    events = simulate(beta, 6000, rng, sizes=(2, 2, 3, 4))  # every pair meets, often
    expected = reference_ratings(events)
    board = rate(comparisons_from(events), bootstrap=0)
    assert len(board.entries) == 8 and len(board.groups) == 1
    for entry in board.entries:
        assert entry.rating == pytest.approx(expected[entry.engine_id], abs=0.5)
    # The ridge is negligible: far below the half point allowed.
    assert max(abs(e.rating - expected[e.engine_id]) for e in board.entries) < 0.05
    assert sum(e.rating for e in board.entries) / 8 == pytest.approx(1000)


def test_known_strengths_give_the_true_order_and_separated_ranks() -> None:
    rng = np.random.default_rng(5)
    beta = np.linspace(-1.2, 1.2, 6)  # 0.48 apart: ~83 rating points
    events = simulate(beta, 8000, rng)
    board = rate(comparisons_from(events), bootstrap=300, seed=1)
    assert [e.engine_id for e in board.entries] == [f"e{i}" for i in range(5, -1, -1)]
    assert [e.rank for e in board.entries] == [1, 2, 3, 4, 5, 6]  # intervals all separate
    expected = truth(beta)
    for entry in board.entries:
        assert abs(entry.rating - expected[int(entry.engine_id[1:])]) < 25
        assert entry.ci_low < entry.rating < entry.ci_high


def test_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    beta = np.array([-0.9, -0.3, 0.0, 0.4, 1.0])
    expected = truth(beta)
    covered = total = 0
    for repetition in range(40):
        rng = np.random.default_rng(1000 + repetition)
        board = rate(comparisons_from(simulate(beta, 1500, rng)), bootstrap=200, seed=repetition)
        for entry in board.entries:
            total += 1
            covered += entry.ci_low <= expected[int(entry.engine_id[1:])] <= entry.ci_high
    # 200 intervals: 95% has a binomial sd of 1.5 points; allow about three of them.
    assert total == 200
    assert 0.90 <= covered / total <= 0.995, covered / total


def test_pattern_bootstrap_matches_resampling_comparison_rows() -> None:
    """The multinomial over battle patterns has the distribution of resampling comparisons
    (with 3 and 4 candidates, battles of one comparison share a winner): the replicates'
    spread equals a plain row bootstrap's, refitted the same way, within sampling error."""
    rng = np.random.default_rng(21)
    beta = np.array([-0.8, -0.2, 0.1, 0.3, 0.9])
    events = simulate(beta, 3000, rng, sizes=(2, 3, 4))
    comparisons = comparisons_from(events)
    board = rate(comparisons, bootstrap=600, seed=4)
    width = {e.engine_id: e.ci_high - e.ci_low for e in board.entries}

    # Plain bootstrap: draw comparison rows, count their battles, refit.
    names = list(comparisons.engines)
    n = len(names)
    per_pattern = np.zeros((len(comparisons.patterns), n * n))
    for p, pattern in enumerate(comparisons.patterns):
        for a, b, outcome in pattern_battles(pattern):
            per_pattern[p, a * n + b] += outcome
            per_pattern[p, b * n + a] += 1.0 - outcome
    full = per_pattern[comparisons.pattern].sum(axis=0).reshape(n, n)
    first, second = np.nonzero(np.triu((full + full.T) > 0, 1))
    model = BradleyTerry(n, first, second)
    draws = np.random.default_rng(9)
    betas = np.array(
        [
            model.fit(
                per_pattern[comparisons.pattern[draws.integers(0, len(events), len(events))]]
                .sum(axis=0)
                .reshape(n, n)
            )
            for _ in range(600)
        ]
    )
    ratings = to_ratings(betas, np.zeros(n, dtype=int))
    low, high = np.percentile(ratings, [2.5, 97.5], axis=0)
    ratios = [width[name] / (high[i] - low[i]) for i, name in enumerate(names)]
    assert all(0.85 <= r <= 1.15 for r in ratios), ratios  # 600 replicates each: ±~6% noise
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.06), ratios


# --- edge cases ---------------------------------------------------------------------------


def test_an_engine_that_never_loses_gets_a_finite_rating_and_a_note() -> None:
    rng = np.random.default_rng(3)
    events = simulate(np.array([0.0, 0.3, 0.6]), 600, rng, names=["x", "y", "z"])
    events += [comparison(10_000 + k, ["champ", "xyz"[k % 3]], "champ", HOUR_8) for k in range(30)]
    board = rate(comparisons_from(events), bootstrap=100, seed=0)
    best = board.entries[0]
    assert best.engine_id == "champ" and best.rank == 1 and best.wins == best.battles == 30
    assert all(math.isfinite(v) for v in (best.rating, best.ci_low, best.ci_high))
    assert board.undefeated == ["champ"] and board.winless == []
    assert any("never lost: champ" in n and "ridge" in n for n in board.notes())
    # The others keep their relative ratings: the ridge does not squeeze them.
    alone = by_id(rate(comparisons_from(events[:600]), bootstrap=0))
    with_champ = by_id(board)
    gap = lambda entries: entries["z"].rating - entries["x"].rating  # noqa: E731
    assert gap(with_champ) == pytest.approx(gap(alone), abs=1.0)


def test_a_disconnected_set_is_rated_and_reported_group_by_group() -> None:
    rng = np.random.default_rng(8)
    left = simulate(np.array([0.0, 0.5, 1.0]), 900, rng, names=["a", "b", "c"])
    right = simulate(np.array([0.0, 2.0]), 400, rng, names=["d", "e"])
    board = rate(comparisons_from(left + right), bootstrap=100, seed=0)
    assert board.groups == [["c", "b", "a"], ["e", "d"]]
    assert [e.engine_id for e in board.entries] == ["c", "b", "a", "e", "d"]
    assert [e.group for e in board.entries] == [0, 0, 0, 1, 1]
    for group in (0, 1):
        members = [e.rating for e in board.entries if e.group == group]
        assert sum(members) / len(members) == pytest.approx(1000)
    # Ranks are within a group: e tops its own group.
    assert by_id(board)["e"].rank == 1 and by_id(board)["c"].rank == 1
    note = next(n for n in board.notes() if "disconnected" in n)
    assert "2 groups" in note and "group 1: c, b, a" in note and "group 2: e, d" in note


def test_a_single_engine_and_no_comparisons(tmp_path: Path) -> None:
    solo = [comparison(k, ["solo", "solo"], "solo", HOUR_8 + k) for k in range(5)]
    board = rate(comparisons_from(solo))
    assert board.entries == [] and [e.engine_id for e in board.excluded] == ["solo"]
    assert any("only one engine (solo)" in n for n in board.notes())
    write_comparisons(tmp_path, solo)
    result = run(str(tmp_path))
    assert "only one engine (solo)" in result.stderr and "nothing to rate" in result.stderr
    assert json_rows(str(tmp_path)) == []

    empty = tmp_path / "empty"
    empty.mkdir()
    header = ",".join(COLUMNS) + "\n"
    for fmt, expected in (("json", "[]\n"), ("csv", header), ("table", "")):
        result = run(str(empty), "--format", fmt)
        assert result.stdout == expected
        assert "no comparisons in" in result.stderr and "nothing to rate" in result.stderr
    assert rate(comparisons_from([])).notes() == ["no comparisons: nothing to rate"]


def test_min_battles_leaves_engines_out_of_the_fit_and_lists_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    events = simulate(np.array([0.0, 0.4, 0.8]), 300, rng, names=["a", "b", "c"])
    events += [comparison(900 + k, ["rare", "a"], "rare" if k else "a", HOUR_8) for k in range(3)]
    full = rate(comparisons_from(events), bootstrap=0)
    assert "rare" in by_id(full)
    board = rate(comparisons_from(events), bootstrap=0, min_battles=10)
    assert [e.engine_id for e in board.excluded] == ["rare"]
    assert board.excluded[0].reason == "3 battles < 10" and board.excluded[0].wins == 2
    without = rate(comparisons_from(events[:300]), bootstrap=0)
    for name, entry in by_id(board).items():  # the fit ignores rare's battles entirely
        assert entry.rating == pytest.approx(by_id(without)[name].rating, abs=1e-6)

    write_comparisons(tmp_path, events)
    result = run(str(tmp_path), "--min-battles", "10", "--bootstrap", "20", "--seed", "1")
    assert "left out of the fit: rare (3 battles < 10)" in result.stderr
    assert "Left out of the fit" in result.stdout and "rare" in result.stdout
    rows = json_rows(str(tmp_path), "--min-battles", "10", "--bootstrap", "20")
    assert [r["engine_id"] for r in rows] == ["c", "b", "a"]


# --- the command on part files ------------------------------------------------------------


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("leaderboard")
    rng = np.random.default_rng(2)
    events = simulate(
        np.array([-0.6, 0.0, 0.2, 0.9]),
        2400,
        rng,
        names=["alpha", "beta", "gamma", "delta"],
        span=3 * HOUR_MS,
        sizes=(2, 3),
    )
    write_comparisons(base, events, partitions=3)
    (base / "events.jsonl").write_bytes(orjson.dumps(events) + b"\n")  # the test's copy
    return base


def events_of(base: Path) -> list[dict[str, Any]]:
    return orjson.loads((base / "events.jsonl").read_bytes())


def test_json_is_the_contract_best_first(output: Path) -> None:
    rows = json_rows(str(output), "--bootstrap", "200", "--seed", "7")
    assert [list(r) for r in rows] == [list(COLUMNS)] * 4
    assert [r["engine_id"] for r in rows] == ["delta", "gamma", "beta", "alpha"]
    ratings = [r["rating"] for r in rows]
    assert ratings == sorted(ratings, reverse=True)
    assert sum(ratings) / 4 == pytest.approx(1000)
    for r in rows:
        assert r["ci_low"] <= r["rating"] <= r["ci_high"]
        assert r["rank"] == 1 + sum(o["ci_low"] > r["ci_high"] for o in rows)
        assert r["win_rate"] == pytest.approx(r["wins"] / r["battles"])
    # Battles as the test counts them from the events it wrote.
    events = events_of(output)
    battles = {r["engine_id"]: 0 for r in rows}
    for e in events:
        w = e["winner"]["engine_id"]
        for c in e["candidates"]:
            if c["engine_id"] != w:
                battles[w] += 1
                battles[c["engine_id"]] += 1
    assert {r["engine_id"]: r["battles"] for r in rows} == battles
    # --seed reproduces; another seed moves the intervals, not the ratings.
    assert json_rows(str(output), "--bootstrap", "200", "--seed", "7") == rows
    other = json_rows(str(output), "--bootstrap", "200", "--seed", "8")
    assert [r["rating"] for r in other] == ratings
    assert [r["ci_low"] for r in other] != [r["ci_low"] for r in rows]


def test_csv_has_the_same_columns_and_values(output: Path) -> None:
    rows = json_rows(str(output), "--bootstrap", "50", "--seed", "3")
    text = run(str(output), "--format", "csv", "--bootstrap", "50", "--seed", "3").stdout
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == list(COLUMNS)
    parsed = list(reader)
    assert [r["engine_id"] for r in parsed] == [r["engine_id"] for r in rows]
    for got, want in zip(parsed, rows, strict=True):
        for name in ("rating", "ci_low", "ci_high", "win_rate"):
            assert float(got[name]) == pytest.approx(want[name], rel=1e-12)
        for name in ("rank", "battles", "wins"):
            assert int(got[name]) == want[name]


def test_table_is_a_rich_table(output: Path) -> None:
    result = run(str(output), "--bootstrap", "50", "--seed", "3")
    out = result.stdout
    assert "Bradley-Terry ratings" in out and "95% interval" in out and "┃" in out
    positions = [out.index(name) for name in ("delta", "gamma", "beta", "alpha")]
    assert positions == sorted(positions)
    assert "50 bootstrap replicates (seed 3)" in re.sub(r"\s+", " ", out)
    assert result.stderr == ""  # nothing to note on a healthy set


def test_since_and_until_select_by_the_comparisons_timestamp(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    names = ["a", "b", "c"]
    first = simulate(np.array([1.0, 0.0, -1.0]), 600, rng, names, start=HOUR_8)
    second = simulate(np.array([-1.0, 0.0, 1.0]), 400, rng, names, start=HOUR_8 + HOUR_MS)
    write_comparisons(tmp_path, first + second)
    nine = HOUR_8 + HOUR_MS

    early = json_rows(str(tmp_path), "--until", str(nine), "--bootstrap", "20")
    late = json_rows(str(tmp_path), "--since", "2027-01-15T09:00:00Z", "--bootstrap", "20")
    assert [r["engine_id"] for r in early] == ["a", "b", "c"]
    assert [r["engine_id"] for r in late] == ["c", "b", "a"]
    assert sum(r["battles"] for r in early) == 2 * 600
    assert sum(r["battles"] for r in late) == 2 * 400
    expected = by_id(rate(comparisons_from(second), bootstrap=0))
    for r in late:
        assert r["rating"] == pytest.approx(expected[r["engine_id"]].rating, abs=1e-6)
    # A bound inside the hour keeps the lines by their own timestamp.
    middle = HOUR_8 + HOUR_MS // 2
    inside = [e for e in first if e["timestamp"] >= middle]
    rows = json_rows(str(tmp_path), "--since", str(middle), "--until", str(nine), "-f", "json")
    assert sum(r["battles"] for r in rows) == 2 * len(inside)
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path), "--since", "yesterday"])
    assert result.exit_code == 2


def test_without_bootstrap_there_are_no_intervals(output: Path) -> None:
    rows = json_rows(str(output), "--bootstrap", "0")
    assert [(r["ci_low"], r["ci_high"]) for r in rows] == [(None, None)] * 4
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]  # 1 + the engines rated higher
    assert "no intervals (--bootstrap 0)" in run(str(output), "--bootstrap", "0").stdout


def test_bad_options_exit_2(output: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["leaderboard", str(output), "--format", "xml"]).exit_code == 2
    assert runner.invoke(app, ["leaderboard", str(output), "--bootstrap", "-1"]).exit_code == 2
    assert runner.invoke(app, ["leaderboard", str(output / "missing")]).exit_code == 2


def test_channel_directory_comes_from_the_config(output: Path, tmp_path: Path) -> None:
    base = tmp_path / "out"
    base.mkdir()
    (base / "judged").symlink_to(output / "comparisons", target_is_directory=True)
    config = tmp_path / "c.yaml"
    config.write_text(
        "json_engine:\n  channels:\n    comparison_result: {filename: judged.jsonl}\n"
    )
    rows = json_rows(str(base), "--config", str(config), "--bootstrap", "10", "--seed", "1")
    assert rows == json_rows(str(output), "--bootstrap", "10", "--seed", "1")
    assert "no comparisons" in run(str(base), "-f", "json").stderr  # default: comparisons/


# --- the HTML report ----------------------------------------------------------------------


def test_report_shows_ratings_pairwise_matrix_and_ratings_over_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    evil = "<b>evil</b>"
    names = ["fast", "slow", evil, "mid"]
    events = simulate(np.array([1.0, -0.8, 0.2, 0.0]), 1500, rng, names, span=3 * DAY_MS)
    write_comparisons(tmp_path, events)
    records = aggregate_dir(tmp_path, window_minutes=60)
    comparisons = comparisons_from(events)
    page = render_html(records, "with ratings", comparisons)

    board = rate(comparisons, 1000, seed=0)  # the report's: the CLI's default, seed 0
    assert board.entries[0].engine_id == "fast" and board.entries[-1].engine_id == "slow"
    table = page[page.index("<table>") : page.index("</table>")]
    order = [table.index(f">{escape_html(e.engine_id)}<") for e in board.entries]
    assert order == sorted(order)
    assert table.count('class="engine-row"') == 4 and table.count('class="bar"') == 4
    top = board.entries[0]
    assert f"<td>{top.rating:.1f}</td>" in table
    assert f"[{top.ci_low:.1f}, {top.ci_high:.1f}]" in table

    matrix = page[page.index('<table class="matrix">') :]
    matrix = matrix[: matrix.index("</table>")]
    wins = board.pairwise
    share = wins[0, 1] / (wins[0, 1] + wins[1, 0])
    assert f"{share * 100:.0f}%<small>{int(wins[0, 1] + wins[1, 0]):,}</small>" in matrix
    assert matrix.count('class="self"') == 4

    over_time = page[page.index("<h2>Ratings over time</h2>") :]
    assert 'aria-label="ratings over time"' in over_time and "<polygon" in over_time
    assert "rating per day, 95% bands" in over_time and "(4 windows)" in over_time

    assert "<b>evil</b>" not in page and escape_html(evil) in page
    assert "<script" not in page and "http" not in page.lower()
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]*)""", page, flags=re.I)
    assert all(link.startswith("#") for link in links)


def escape_html(text: str) -> str:
    from html import escape

    return escape(text)


def test_report_command_reads_the_comparisons(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    events = simulate(np.array([0.5, 0.0]), 80, rng, names=["x", "y"])
    write_comparisons(tmp_path, events)
    page = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--html", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "Bradley-Terry maximum-likelihood fit of 80 battles" in html
    assert "Pairwise win fractions" in html and "Ratings over time need two windows" in html


def test_comparisons_without_timestamp_are_rated_but_not_over_time() -> None:
    events = [comparison(k, ["p", "q"], "pq"[k % 3 == 0], None) for k in range(60)]
    comparisons = comparisons_from(events)
    assert isinstance(comparisons, Comparisons) and not comparisons.timed().any()
    board = rate(comparisons, bootstrap=0)
    assert by_id(board)["p"].wins == 40
    assert RIDGE == 1e-4
