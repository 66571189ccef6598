"""`json-engine leaderboard`'s options of issue 28 on real part files: `--category`,
`--anchor`, `--ci sandwich`, `--style-control`, and today's edge cases under them (groups
that never met, an engine that never lost, engines below `--min-battles`), plus the report's
table per category.

Adversaries: an anchor that only renames the scale (it must shift every rating by one
constant and widen the others' intervals by the anchor's own uncertainty), an anchor or a
category that does not exist, intervals of the two methods that disagree, style control that
cannot tell a verbose engine from a strong one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from sinks.offline.leaderboard import comparisons_from, rate
from sinks.offline.leaderboard.style import features_of
from sinks.offline.report import render_html
from streams.cli import app
from tests.test_leaderboard import HOUR_8, comparison, simulate, write_comparisons


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["leaderboard", *args])


def json_rows(*args: str) -> list[dict[str, Any]]:
    result = invoke(*args, "--format", "json")
    assert result.exit_code == 0, result.output + result.stderr
    return orjson.loads(result.stdout)


def with_categories(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for k, event in enumerate(events):
        event["category"] = "coding" if k % 3 else "math"
    return events


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("options")
    rng = np.random.default_rng(28)
    events = with_categories(
        simulate(np.array([-0.5, 0.0, 0.3, 0.8]), 3000, rng, names=["a", "b", "c", "d"])
    )
    for k in range(0, len(events), 6):  # a tie in every sixth comparison
        events[k].pop("winner")
        events[k]["tie"] = "both_bad" if k % 12 else "tie"
    write_comparisons(base, events)
    (base / "copy.json").write_bytes(orjson.dumps(events))
    return base


def events_of(base: Path) -> list[dict[str, Any]]:
    return orjson.loads((base / "copy.json").read_bytes())


def test_category_rates_its_comparisons_alone(output: Path) -> None:
    rows = json_rows(str(output), "--category", "math", "--bootstrap", "0")
    math_only = [e for e in events_of(output) if e["category"] == "math"]
    board = rate(comparisons_from(math_only), bootstrap=0)
    assert [(r["engine_id"], r["battles"], r["ties"]) for r in rows] == [
        (e.engine_id, e.battles, e.ties) for e in board.entries
    ]
    assert [r["rating"] for r in rows] == pytest.approx([e.rating for e in board.entries])
    everything = json_rows(str(output), "--bootstrap", "0")
    assert sum(r["battles"] for r in rows) < sum(r["battles"] for r in everything)


def test_an_unknown_category_is_nothing_to_rate_and_names_the_known_ones(output: Path) -> None:
    result = invoke(str(output), "--category", "poetry", "--format", "json")
    assert result.exit_code == 0
    assert orjson.loads(result.stdout) == []
    assert "no comparisons of category 'poetry'" in result.stderr
    assert "(categories: coding, math)" in result.stderr


def test_anchor_shifts_every_rating_by_one_constant_and_widens_the_others(output: Path) -> None:
    plain = {r["engine_id"]: r for r in json_rows(str(output), "--ci", "sandwich")}
    pinned = {
        r["engine_id"]: r for r in json_rows(str(output), "--ci", "sandwich", "--anchor", "b=1200")
    }
    shift = 1200 - plain["b"]["rating"]
    for name, row in pinned.items():
        assert row["rating"] == pytest.approx(plain[name]["rating"] + shift, abs=1e-6)
    assert pinned["b"]["ci_low"] == pinned["b"]["ci_high"] == pytest.approx(1200)
    for name in ("a", "c", "d"):
        width = pinned[name]["ci_high"] - pinned[name]["ci_low"]
        assert width > plain[name]["ci_high"] - plain[name]["ci_low"], name
    # The bootstrap, anchored the same way, agrees with the sandwich.
    booted = {
        r["engine_id"]: r
        for r in json_rows(str(output), "--anchor", "b=1200", "--bootstrap", "600", "--seed", "3")
    }
    assert booted["b"]["ci_high"] - booted["b"]["ci_low"] == pytest.approx(0.0)
    for name in ("a", "c", "d"):
        sandwich = pinned[name]["ci_high"] - pinned[name]["ci_low"]
        bootstrap = booted[name]["ci_high"] - booted[name]["ci_low"]
        assert bootstrap == pytest.approx(sandwich, rel=0.2), name


def test_anchor_variance_is_that_of_the_difference() -> None:
    """With two engines, centred ratings are ± half their difference, so the anchored width
    (that of the difference itself) is exactly twice the centred one."""
    events = simulate(np.array([0.0, 0.5]), 2000, np.random.default_rng(4))
    centred = {e.engine_id: e for e in rate(comparisons_from(events), ci="sandwich").entries}
    pinned = rate(comparisons_from(events), ci="sandwich", anchor=("e0", 1000.0))
    e1 = next(e for e in pinned.entries if e.engine_id == "e1")
    assert e1.ci_high - e1.ci_low == pytest.approx(
        2 * (centred["e1"].ci_high - centred["e1"].ci_low), rel=1e-6
    )


@pytest.mark.parametrize("anchor", ["b", "b=", "=1200", "b=high", "b=nan"])
def test_a_malformed_anchor_exits_2(output: Path, anchor: str) -> None:
    result = invoke(str(output), "--anchor", anchor)
    assert result.exit_code == 2
    assert "ENGINE=RATING" in result.stderr


def test_an_anchor_that_is_not_rated_exits_2(output: Path) -> None:
    result = invoke(str(output), "--anchor", "zeta=1000")
    assert result.exit_code == 2
    assert "'zeta' is not among the rated engines" in result.stderr


def test_ci_sandwich_agrees_with_the_bootstrap_and_bad_methods_exit_2(output: Path) -> None:
    sandwich = json_rows(str(output), "--ci", "sandwich")
    bootstrap = {r["engine_id"]: r for r in json_rows(str(output), "--seed", "1")}
    for row in sandwich:
        other = bootstrap[row["engine_id"]]
        assert row["rating"] == pytest.approx(other["rating"])
        width = row["ci_high"] - row["ci_low"]
        assert width == pytest.approx(other["ci_high"] - other["ci_low"], rel=0.15)
    table = invoke(str(output), "--ci", "sandwich")
    assert "95% sandwich (robust) intervals" in table.stdout
    assert invoke(str(output), "--ci", "jackknife").exit_code == 2


def styled(n: int, seed: int) -> list[dict[str, Any]]:
    """Equal engines but one (`verbose`) writes longer answers, and judges like long ones:
    the plain fit rates it high, style control must not."""
    rng = np.random.default_rng(seed)
    names = ["verbose", "plain-1", "plain-2", "plain-3"]
    events = []
    for k in range(n):
        pair = rng.choice(len(names), size=2, replace=False)
        texts = []
        for e in pair:  # markdown at random for all; only the verbose engine writes longer
            low = 40 if names[e] == "verbose" else 10
            marks = "## Answer\n" * int(rng.integers(0, 2)) + "- one\n" * int(rng.integers(0, 3))
            texts.append(marks + "word " * int(rng.integers(low, 90)))
        length = np.array([len(t) for t in texts], dtype=float)
        style = 3.0 * (length[0] - length[1]) / length.sum()
        winner = pair[0] if rng.random() < 1 / (1 + np.exp(-style)) else pair[1]
        event = comparison(k, [names[e] for e in pair], names[winner], HOUR_8 + k)
        for candidate, text in zip(event["candidates"], texts, strict=True):
            candidate["output"] = text
        events.append(event)
    return events


def test_style_control_holds_length_and_markdown_fixed(tmp_path: Path) -> None:
    write_comparisons(tmp_path, styled(4000, 5))
    plain = {r["engine_id"]: r for r in json_rows(str(tmp_path), "--ci", "sandwich")}
    result = invoke(str(tmp_path), "--style-control", "--ci", "sandwich", "--format", "json")
    assert result.exit_code == 0, result.stderr
    controlled = {r["engine_id"]: r for r in orjson.loads(result.stdout)}
    assert plain["verbose"]["rank"] == 1 and plain["verbose"]["rating"] > 1050
    assert abs(controlled["verbose"]["rating"] - 1000) < 20  # equal once style is fixed
    assert "note: style coefficients" in result.stderr and "length +" in result.stderr
    table = invoke(str(tmp_path), "--style-control", "--bootstrap", "30", "--seed", "2")
    assert table.exit_code == 0, table.stderr
    assert "style controlled" in table.stdout and "Style coefficients" in table.stdout
    for feature in ("length", "headers", "lists", "bold"):
        assert feature in table.stdout


# --- edge cases under the new options -----------------------------------------------------


def edge_events() -> list[dict[str, Any]]:
    """Two groups that never met, an engine that never lost, one below 10 battles."""
    events = []
    rng = np.random.default_rng(8)
    for k in range(400):
        pair = ["a", "b"] if k % 2 else ["c", "d"]
        events.append(comparison(k, pair, pair[int(rng.random() < 0.4)], HOUR_8 + k))
        events[-1]["candidates"][0]["output"] = "word " * int(rng.integers(1, 50))
    for k in range(30):
        events.append(comparison(1000 + k, ["champ", "a"], "champ", HOUR_8 + 1000 + k))
    for k in range(3):
        events.append(comparison(2000 + k, ["rare", "b"], "b", HOUR_8 + 2000 + k))
    return events


@pytest.mark.parametrize(
    "options",
    [("--ci", "sandwich"), ("--style-control", "--ci", "sandwich"), ("--anchor", "a=1100")],
)
def test_edge_cases_hold_under_the_new_options(tmp_path: Path, options: tuple[str, ...]) -> None:
    write_comparisons(tmp_path, edge_events())
    result = invoke(str(tmp_path), "--min-battles", "10", "--bootstrap", "50", "--seed", "1",
                    "--format", "json", *options)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = {r["engine_id"]: r for r in orjson.loads(result.stdout)}
    assert set(rows) == {"a", "b", "c", "d", "champ"}
    assert "disconnected" in result.stderr
    assert "never lost: champ" in result.stderr
    assert "rare (3 battles < 10)" in result.stderr
    group_cd = [rows["c"]["rating"], rows["d"]["rating"]]
    assert np.mean(group_cd) == pytest.approx(1000, abs=1e-6)  # its own centre
    if "--anchor" in options:
        assert rows["a"]["rating"] == pytest.approx(1100)
        assert "pins its own group only" in result.stderr
    for row in rows.values():
        assert row["ci_low"] <= row["rating"] <= row["ci_high"]


def test_report_has_a_table_per_category(output: Path) -> None:
    events = events_of(output)
    comparisons = comparisons_from(events)
    record = {
        "schema_version": 1, "engine_id": "a", "window_start": HOUR_8,
        "window_end": HOUR_8 + 60_000, "count": 1, "success_count": 1, "success_rate": 1.0,
        "latency_ms": {"min": 1, "max": 1, "avg": 1, "p50": 1, "p95": 1, "p99": 1},
        "quality": {"count": 0, "mean": None},
        "comparisons": {"count": 0, "wins": 0, "win_rate": None},
    }  # fmt: skip
    page = render_html([record], "t", comparisons)
    section = page[page.index("<h2>Ratings by category</h2>") :]
    assert section.index("<h3>coding</h3>") < section.index("<h3>math</h3>")  # most first
    math_board = rate(comparisons.in_category("math"), ci="sandwich")
    top = math_board.entries[0]
    assert f"<td>{top.engine_id}</td><td>{top.rating:.1f}</td>" in section
    assert f"{math_board.comparisons:,} comparisons" in section


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("plain words", (0, 0, 0)),
        ("# one\n## two\n###### six\n####### seven is not\n#tight is not", (3, 0, 0)),
        ("- a\n* b\n+ c\n  - nested\n1. first\n10. tenth\n-no space\n3.no", (0, 6, 0)),
        ("**bold** and __bold__ and **not\nbold** end", (0, 0, 2)),
        ("```\n# in code\n- in code\n**in code**\n```\n# after", (1, 0, 0)),
        ("# open fence\n```python\n# never closed\n- hidden", (1, 0, 0)),
    ],
)
def test_style_features_count_what_arena_counts(text: str, counts: tuple[int, ...]) -> None:
    """Headers and list items at a line start, bold spans on one line, nothing inside fenced
    code; the length counts every character."""
    length, *marks = features_of(text)
    assert length == len(text)
    assert tuple(marks) == counts
