"""Comparisons reduced to what the leaderboard needs: battle patterns, times, categories and,
for style control, the battles one by one with their candidates' style features.

A comparison's battles (issues 16, 28):
- with a winner: the winner against each candidate entry of another engine (the winner wins);
- with a tie and no winner: every pair of candidate entries of different engines ties;
- with a winner and a tie: the winner beats the others, and they tie pairwise.
An engine listed twice loses (or ties) twice; entries of the winner's own engine give none.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from sinks.offline.leaderboard.style import FEATURES, features_of
from sinks.reader import iter_lines

NO_TIME = np.iinfo(np.int64).min  # a comparison without `timestamp`
NO_CATEGORY = -1
WIN, TIE, LOSS = 1.0, 0.5, 0.0  # the outcome of a battle for its first engine

# (winner's engine index or -1, the other entries' engine indexes sorted, tie)
Pattern = tuple[int, tuple[int, ...], bool]


def battle_positions(codes: Sequence[int], winner: int, tie: bool) -> list[tuple[int, int, float]]:
    """The battles of one comparison as (position, later position, outcome of the first):
    the positions index `codes`, the engine of each candidate entry, and each battle keeps
    the candidates' order, as Arena keeps model_a and model_b (style features are differences
    first minus second, and their mean is taken in that orientation); `winner` is an engine
    or -1."""
    first = codes.index(winner) if winner >= 0 else -1
    others = [k for k, code in enumerate(codes) if code != winner]
    battles = []
    if first >= 0:
        battles = [(first, k, WIN) if first < k else (k, first, LOSS) for k in others]
    if tie:
        for i, x in enumerate(others):
            for y in others[i + 1 :]:
                if codes[x] != codes[y]:
                    battles.append((x, y, TIE))
    return battles


def pattern_battles(pattern: Pattern) -> list[tuple[int, int, float]]:
    """The battles of a pattern as (engine, engine, outcome of the first)."""
    winner, others, tie = pattern
    codes = ([winner] if winner >= 0 else []) + list(others)
    return [(codes[x], codes[y], outcome) for x, y, outcome in battle_positions(codes, winner, tie)]


@dataclass(frozen=True)
class StyleRows:
    """Every battle on its own, for the contextual fit: its comparison, its two engines, the
    outcome of the first, and the raw style features of both answers (rows x 2 x features)."""

    comparison: np.ndarray
    first: np.ndarray
    second: np.ndarray
    outcome: np.ndarray
    features: np.ndarray

    def select(self, mask: np.ndarray) -> StyleRows:
        """The rows of the comparisons where `mask` is true, comparisons renumbered."""
        renumber = np.cumsum(mask) - 1
        keep = mask[self.comparison]
        return StyleRows(
            renumber[self.comparison[keep]],
            self.first[keep],
            self.second[keep],
            self.outcome[keep],
            self.features[keep],
        )


@dataclass(frozen=True)
class Comparisons:
    """Comparisons reduced to what the leaderboard needs.

    `engines` names every engine seen as a candidate (index → engine_id); `patterns` holds the
    distinct battle patterns; each comparison is one entry of `pattern` (an index into
    `patterns`), `timestamp` (epoch ms, NO_TIME when absent) and `category` (an index into
    `categories`, NO_CATEGORY when absent). `style` holds the battles one by one when loaded
    for style control.
    """

    engines: tuple[str, ...]
    patterns: tuple[Pattern, ...]
    pattern: np.ndarray = field(repr=False)
    timestamp: np.ndarray = field(repr=False)
    category: np.ndarray = field(repr=False)
    categories: tuple[str, ...] = ()
    style: StyleRows | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.pattern)

    def select(self, mask: np.ndarray) -> Comparisons:
        """The comparisons where `mask` is true (same engines, patterns and categories)."""
        return Comparisons(
            self.engines,
            self.patterns,
            self.pattern[mask],
            self.timestamp[mask],
            self.category[mask],
            self.categories,
            None if self.style is None else self.style.select(mask),
        )

    def timed(self) -> np.ndarray:
        return self.timestamp != NO_TIME

    def in_category(self, name: str) -> Comparisons:
        """The comparisons of category `name` (none when no comparison has it)."""
        code = self.categories.index(name) if name in self.categories else -2
        return self.select(self.category == code)

    def category_names(self) -> list[str]:
        """The categories present, most comparisons first."""
        counts = np.bincount(self.category[self.category >= 0], minlength=len(self.categories))
        return [self.categories[c] for c in np.argsort(-counts, kind="stable") if counts[c]]


def comparisons_from(events: Iterable[dict[str, Any]], style: bool = False) -> Comparisons:
    """Reduce comparison_result objects (already parsed, already validated); with `style`,
    keep every battle with the style features of its two answers too."""
    index: dict[str, int] = {}
    categories: dict[str, int] = {}
    patterns: dict[Pattern, int] = {}
    pattern, timestamp, category = array("q"), array("q"), array("q")
    rows = _RowsBuilder() if style else None
    for event in events:
        candidates = event["candidates"]
        codes = []
        for candidate in candidates:
            engine = candidate["engine_id"]
            code = index.get(engine)
            if code is None:
                code = index[engine] = len(index)
            codes.append(code)
        won = event.get("winner")
        winner = -1
        if won is not None:
            winner = index.get(won["engine_id"], -1)
            if winner < 0:  # refused by the validator; kept harmless all the same
                winner = index[won["engine_id"]] = len(index)
                codes.append(winner)
                candidates = [*candidates, {"output": ""}]
        tie = event.get("tie") is not None
        key = (winner, tuple(sorted(c for c in codes if c != winner)), tie)
        p = patterns.get(key)
        if p is None:
            p = patterns[key] = len(patterns)
        pattern.append(p)
        ts = event.get("timestamp")
        timestamp.append(NO_TIME if ts is None else int(ts))
        name = event.get("category")
        if name is None:
            category.append(NO_CATEGORY)
        else:
            c = categories.get(name)
            if c is None:
                c = categories[name] = len(categories)
            category.append(c)
        if rows is not None:
            rows.add(len(pattern) - 1, codes, winner, tie, candidates)
    return Comparisons(
        tuple(index),
        tuple(patterns),
        _ints(pattern),
        _ints(timestamp),
        _ints(category),
        tuple(categories),
        None if rows is None else rows.build(),
    )


def load_comparisons(
    directory: str | Path,
    since: int | None = None,
    until: int | None = None,
    style: bool = False,
) -> Comparisons:
    """The finished comparison lines of a channel directory with `timestamp` in
    [since, until) (epoch ms); the reader opens only the hourly buckets of the range."""
    return comparisons_from(
        (orjson.loads(line) for line in iter_lines(directory, since, until)), style
    )


def _ints(values: array) -> np.ndarray:
    return np.frombuffer(values, dtype=np.int64).copy()


class _RowsBuilder:
    """Collects StyleRows battle by battle (features computed once per answer)."""

    def __init__(self) -> None:
        self.comparison, self.first, self.second = array("q"), array("q"), array("q")
        self.outcome, self.features = array("d"), array("d")

    def add(
        self,
        comparison: int,
        codes: list[int],
        winner: int,
        tie: bool,
        candidates: Sequence[dict[str, Any]],
    ) -> None:
        battles = battle_positions(codes, winner, tie)
        if not battles:
            return
        features = [features_of(c.get("output", "")) for c in candidates]
        for x, y, outcome in battles:
            self.comparison.append(comparison)
            self.first.append(codes[x])
            self.second.append(codes[y])
            self.outcome.append(outcome)
            self.features.extend(features[x])
            self.features.extend(features[y])

    def build(self) -> StyleRows:
        features = np.frombuffer(self.features, dtype=np.float64).copy()
        return StyleRows(
            _ints(self.comparison),
            _ints(self.first),
            _ints(self.second),
            np.frombuffer(self.outcome, dtype=np.float64).copy(),
            features.reshape(-1, 2, len(FEATURES)),
        )
