"""Ties and categories in comparisons (issue 28): the schema's rules, what a tie means for the
aggregates, quality, training samples and DPO pairs, and the whole pipeline end to end.

Adversaries: a producer sending ties of both kinds, a tie beside a winner (ambiguous with two
engines, meaningful with three), a comparison with neither, old events that must not change
meaning; and on the pipeline, a real worker with these mixed into ordinary traffic, whose
aggregates, samples, export and leaderboard must say what the README says.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from sinks.offline.aggregate_batch import aggregate_dir
from sinks.offline.export import dpo_rows
from sinks.offline.leaderboard import comparisons_from, rate
from streams import events
from streams.aggregates.local import comparison_observations
from streams.config import Thresholds
from streams.publisher import Publisher
from streams.topics import create_topics
from streams.training import derive_sample
from streams.validation import ValidationError, Validator
from tests.conftest import ConfigFactory
from tests.workers import WorkerProcess, cli, lines_of, records, wait_for_lines

VALIDATOR = Validator()
T = Thresholds()
TS = 1_764_300_000_000


def compared(*engines: str, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "comparison_id": fields.pop("cid", "c-1"),
        "query": "q",
        "candidates": [
            {"engine_id": e, "output": f"answer of {e}", "metrics": {}} for e in engines
        ],
        "metrics": {},
        "timestamp": TS,
    }
    event.update(fields)
    return event


def rejected(event: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        VALIDATOR.validate("comparison_result", orjson.dumps(event))
    return caught.value


# --- the schema ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tie", "both_bad"])
def test_a_tie_without_a_winner_is_valid(kind: str) -> None:
    event = compared("a", "b", tie=kind, category="coding")
    assert VALIDATOR.validate("comparison_result", orjson.dumps(event)) == event


def test_neither_winner_nor_tie_is_refused() -> None:
    error = rejected(compared("a", "b"))
    assert (error.path, error.rule) == ("winner", "winner_required")


def test_a_tie_beside_a_winner_is_refused_where_it_is_ambiguous() -> None:
    winner = {"engine_id": "a", "score": 0.9}
    for candidates in (("a", "b"), ("a", "b", "b"), ("a", "a", "b")):
        error = rejected(compared(*candidates, winner=winner, tie="tie"))
        assert (error.path, error.rule) == ("tie", "tie_with_winner"), candidates
    # three engines: the winner beat both, who tied: one reading only
    event = compared("a", "b", "c", winner=winner, tie="both_bad")
    assert VALIDATOR.validate("comparison_result", event) == event


def test_bad_tie_values_and_categories_are_refused() -> None:
    assert rejected(compared("a", "b", tie="draw")).path == "tie"
    assert rejected(compared("a", "b", tie="tie", category="")).path == "category"
    assert rejected(compared("a", "b", tie=None)).path == "tie"


def test_old_events_are_unchanged() -> None:
    """Today's comparisons (a winner, no tie, no category) stay valid and mean what they
    meant: the same quality, win, sample and pairs as before."""
    rng = random.Random(28)
    for i in range(200):
        event = events.comparison_result(rng, ["a", "b", "c", "d"], TS + i)
        assert VALIDATOR.validate("comparison_result", orjson.dumps(event)) == event
        (engine, _, (won, _)) = next(
            o for o in comparison_observations(None, event)
            if o[0] == event["winner"]["engine_id"]
        )  # fmt: skip
        assert won and engine == event["winner"]["engine_id"]


# --- what a tie means ---------------------------------------------------------------------


def test_a_tie_is_a_comparison_nobody_won_with_only_own_scores() -> None:
    event = compared("a", "b", tie="tie")
    event["candidates"][0]["score"] = 0.7
    observed = {engine: rest for engine, _, rest in comparison_observations(None, event)}
    assert observed == {"a": (False, [0.7]), "b": (False, [])}


def test_a_tie_gives_no_training_sample_and_no_dpo_pair() -> None:
    tie = compared("a", "b", tie="tie")
    assert derive_sample(tie, T) is None
    assert list(dpo_rows(iter([tie]), 0.0)) == []
    # a winner beside a tie of the others: the winner's sample and its pairs, none between
    # the tied ones
    three = compared("a", "b", "c", winner={"engine_id": "a", "score": 0.95}, tie="tie")
    assert derive_sample(three, T)["output"] == "answer of a"
    pairs = {(r["chosen"], r["rejected"]) for r in dpo_rows(iter([three]), 0.0)}
    assert pairs == {("answer of a", "answer of b"), ("answer of a", "answer of c")}


def test_leaderboard_counts_a_tie_half_a_win_each_way() -> None:
    """3 wins of a over b and 2 ties: a wins 4 of 5 in the fit, so the rating gap is
    400·log10(4); the win rate counts the ties half too."""
    won = [compared("a", "b", cid=f"w{i}", winner={"engine_id": "a", "score": 1}) for i in range(3)]
    ties = [compared("b", "a", cid=f"t{i}", tie=kind) for i, kind in enumerate(["tie", "both_bad"])]
    board = rate(comparisons_from(won + ties), bootstrap=0)
    a, b = board.entries
    assert (a.engine_id, a.battles, a.wins, a.ties) == ("a", 5, 3, 2)
    assert (b.engine_id, b.battles, b.wins, b.ties) == ("b", 5, 0, 2)
    assert a.win_rate == pytest.approx(0.8) and b.win_rate == pytest.approx(0.2)
    assert a.rating - b.rating == pytest.approx(400 * 0.6020599913, abs=0.05)


def test_a_winner_beside_a_tie_beats_each_other_and_they_tie() -> None:
    event = compared("b", "a", "c", winner={"engine_id": "a", "score": 1}, tie="tie")
    entries = {e.engine_id: e for e in rate(comparisons_from([event]), bootstrap=0).entries}
    assert {k: (e.battles, e.wins, e.ties) for k, e in entries.items()} == {
        "a": (2, 2, 0),
        "b": (2, 0, 1),
        "c": (2, 0, 1),
    }


# --- the pipeline end to end --------------------------------------------------------------


def mixed_traffic(n: int) -> list[dict[str, Any]]:
    """Ordinary comparisons with ties of both kinds, winners beside ties, and categories."""
    rng = random.Random(2028)
    out = []
    for i in range(n):
        event = events.comparison_result(rng, ["e1", "e2", "e3", "e4"], TS + 1000 * i)
        event["comparison_id"] = f"mix-{i}"
        event["category"] = ["coding", "math"][i % 2]
        engines = {c["engine_id"] for c in event["candidates"]}
        if i % 5 == 0:
            event["tie"] = "tie" if i % 10 else "both_bad"
            del event["winner"]
        elif i % 7 == 0 and len(engines) >= 3:
            event["tie"] = "tie"
        out.append(event)
    return out


def test_ties_and_categories_through_the_pipeline(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path, cfg = make_config(
        {
            "aggregation": {"window_minutes": 1, "grace_seconds": 1, "idle_seconds": 2},
            "channels": {
                "comparison_result": {"auto_flush_seconds": 0.2},
                "training_sample": {"auto_flush_seconds": 0.2},
                "aggregated_stats": {"auto_flush_seconds": 0.2},
            },
        }
    )
    create_topics(cfg)
    comparisons = mixed_traffic(300)
    # An hour later: its time closes every window before it (the inputs go idle, and the
    # largest stream time closes windows); its own window stays open and is not counted.
    clock = compared("e1", "e2", cid="clock", winner={"engine_id": "e1", "score": 0.9})
    clock["timestamp"] = TS + 3_600_000
    clock["category"] = "math"
    comparisons.append(clock)
    windowed = comparisons[:-1]
    ties = [c for c in comparisons if "winner" not in c]
    assert ties and any("tie" in c and "winner" in c for c in comparisons)
    worker = WorkerProcess(path, tmp_path).start()
    try:
        with Publisher(cfg) as publisher:
            for c in comparisons:
                publisher.collect_comparison_result(c)
        wait_for_lines(cfg, "comparison_result", len(comparisons), timeout=90)
        qualifying = [c for c in comparisons if "winner" in c and c["winner"]["score"] >= 0.5]
        wait_for_lines(cfg, "training_sample", len(qualifying), timeout=90)
        windows = {(c["timestamp"] // 60_000) for c in windowed}
        engines = {x["engine_id"] for c in windowed for x in c["candidates"]}
        expected_windows = sum(
            len({x["engine_id"] for c in windowed for x in c["candidates"]
                 if c["timestamp"] // 60_000 == w})
            for w in windows
        )  # fmt: skip
        stats = records(wait_for_lines(cfg, "aggregated_stats", expected_windows, timeout=120))
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    assert len(engines) == 4

    # Training samples: one per comparison with a winner whose score reaches bronze; a tie
    # without a winner gives none.
    samples = records(lines_of(cfg, "training_sample"))
    assert sorted(s["source_trace_id"] for s in samples) == sorted(
        c["comparison_id"] for c in qualifying
    )

    # Aggregates: a tie is a comparison nobody won; the twin agrees with the stream.
    count: dict[str, int] = {}
    wins: dict[str, int] = {}
    for c in windowed:
        for engine in {x["engine_id"] for x in c["candidates"]}:
            count[engine] = count.get(engine, 0) + 1
            wins[engine] = wins.get(engine, 0) + (c.get("winner", {}).get("engine_id") == engine)
    streamed = {e: (0, 0) for e in engines}
    for s in stats:
        n, w = streamed[s["engine_id"]]
        streamed[s["engine_id"]] = (n + s["comparisons"]["count"], w + s["comparisons"]["wins"])
    assert streamed == {e: (count[e], wins[e]) for e in engines}
    base = Path(cfg.output.base_path)
    twin = aggregate_dir(base, 1, cfg)
    closed = [r for r in twin if r["window_start"] < clock["timestamp"] - 60_000]
    assert sum(r["comparisons"]["wins"] for r in closed) == sum(wins.values())
    assert sum(r["comparisons"]["count"] for r in closed) == sum(count.values())

    # DPO: only comparisons with a winner make pairs.
    out = tmp_path / "dpo.jsonl"
    exported = cli("export", str(base), "--format", "dpo", "--min-tier", "bronze",
                   "--out", str(out), "--config", str(path))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    expected = list(dpo_rows(iter(qualifying), T.bronze))
    assert rows and sorted(map(orjson.dumps, rows)) == sorted(map(orjson.dumps, expected))

    # Leaderboard: ties half a win each way; a category rates its comparisons alone.
    board = rate(comparisons_from(comparisons), bootstrap=0)
    result = cli("leaderboard", str(base), "--format", "json", "--bootstrap", "0",
                 "--config", str(path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = orjson.loads(result.stdout)
    assert [(r["engine_id"], r["ties"]) for r in rows] == [
        (e.engine_id, e.ties) for e in board.entries
    ]
    assert sum(r["ties"] for r in rows) > 0
    for r, e in zip(rows, board.entries, strict=True):
        assert r["rating"] == pytest.approx(e.rating, abs=1e-6)
    math_only = [c for c in comparisons if c["category"] == "math"]
    result = cli("leaderboard", str(base), "--format", "json", "--bootstrap", "0",
                 "--category", "math", "--config", str(path))  # fmt: skip
    expected_math = rate(comparisons_from(math_only), bootstrap=0)
    assert [(r["engine_id"], round(r["rating"], 6)) for r in orjson.loads(result.stdout)] == [
        (e.engine_id, round(e.rating, 6)) for e in expected_math.entries
    ]
