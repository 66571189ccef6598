"""The leaderboard: who is rated, the fit, its intervals, ranks and notes (issues 16, 28).

- **Left out.** Engines with no battle, or fewer than `min_battles`, are left out of the fit
  (their battles too) and listed apart, as are engines whose only battles were against those.
  `battles`, `wins`, `ties` and `win_rate` count every battle of an engine, left-out
  opponents included; `min_battles` is judged on that count. `win_rate` counts a tie as half
  a win, as the fit does.
- **Groups.** When some engines never met the others, even through third engines, their
  ratings cannot be compared: each connected group is centred on 1000 on its own and ranked
  within itself, and the notes name the groups.
- **Anchor.** `anchor=(engine, rating)` pins that engine's rating instead of the group's mean:
  ratings are shifted, and each interval becomes that of the difference to the anchor (the
  anchor's own has width 0, the others widen by the anchor's uncertainty).
- **Rank.** 1 + the number of engines (of the same connected group) whose `ci_low` is above
  this engine's `ci_high`; tied engines share a rank. Without intervals (`bootstrap=0`):
  1 + the number of engines rated higher.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from sinks.offline.leaderboard.battles import LOSS, WIN, Comparisons, pattern_battles
from sinks.offline.leaderboard.fit import (
    RIDGE,
    SCALE,
    BradleyTerry,
    rating_transform,
    to_ratings,
)
from sinks.offline.leaderboard.intervals import bootstrap as bootstrap_betas
from sinks.offline.leaderboard.intervals import kinds_of, sandwich
from sinks.offline.leaderboard.style import FEATURES, ContextualBradleyTerry, normalized

DEFAULT_BOOTSTRAP = 1000
CI_METHODS = ("bootstrap", "sandwich")
Z95 = 1.959963984540054  # the normal's 97.5th percentile
FIELDS = (
    "engine_id", "rating", "ci_low", "ci_high", "rank", "battles", "wins", "win_rate", "ties",
)  # fmt: skip


@dataclass
class StyleCoefficient:
    """gamma of one style feature: the change in log-odds of winning per standard deviation of
    the feature's normalized difference, with its 95% interval."""

    feature: str
    coefficient: float
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass
class Entry:
    engine_id: str
    battles: int
    wins: int
    ties: int = 0
    rating: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    rank: int | None = None
    group: int = 0  # connected group, 0 the largest
    reason: str = ""  # why it is left out of the fit

    @property
    def win_rate(self) -> float | None:
        return (self.wins + self.ties / 2) / self.battles if self.battles else None

    def row(self) -> dict[str, Any]:
        """The Contract's JSON object."""
        return {name: getattr(self, name) for name in FIELDS}


@dataclass
class Leaderboard:
    entries: list[Entry]  # rated engines, best first (group by group when disconnected)
    excluded: list[Entry]  # left out of the fit, most battles first
    groups: list[list[str]]  # connected groups of rated engines, largest first
    comparisons: int
    battles: int
    bootstrap: int
    seed: int | None
    min_battles: int
    pairwise: np.ndarray  # wins[i, j] among `entries`, in their order, ties as halves
    ci: str = "bootstrap"
    anchor: tuple[str, float] | None = None
    category: str | None = None
    style: list[StyleCoefficient] = field(default_factory=list)
    undefeated: list[str] = field(default_factory=list)
    winless: list[str] = field(default_factory=list)
    unconverged: int = 0
    ridge: float = RIDGE

    def rows(self) -> list[dict[str, Any]]:
        return [e.row() for e in self.entries]

    def notes(self) -> list[str]:
        """What a reader of the table must know: empty input, groups, bounds, exclusions."""
        notes = []
        if not self.comparisons:
            notes.append("no comparisons: nothing to rate")
        elif not self.entries:
            if self.battles == 0:
                engines = [e.engine_id for e in self.excluded]
                if len(engines) == 1:
                    notes.append(
                        f"{self.comparisons} comparisons but only one engine ({engines[0]}) "
                        "took part: no battles, nothing to rate it against"
                    )
                else:
                    notes.append(
                        f"{self.comparisons} comparisons but none between two different "
                        "engines: no battles, nothing to rate"
                    )
            else:
                notes.append(
                    f"fewer than two engines with at least {self.min_battles} battles: "
                    "nothing to rate"
                )
        if len(self.groups) > 1:
            listed = "; ".join(
                f"group {i + 1}: {', '.join(names)}" for i, names in enumerate(self.groups)
            )
            notes.append(
                f"the comparison graph is disconnected: {len(self.groups)} groups of engines "
                f"never compared with each other, directly or through others ({listed}). "
                "Ratings are comparable only within a group (each is centred on 1000), and "
                "ranks are within a group."
            )
        if self.undefeated:
            notes.append(
                f"never lost: {', '.join(self.undefeated)} — the rating is a lower bound set by "
                f"the ridge ({self.ridge:g}), not a measurement"
            )
        if self.winless:
            notes.append(
                f"never won: {', '.join(self.winless)} — the rating is an upper bound set by "
                f"the ridge ({self.ridge:g}), not a measurement"
            )
        if self.excluded and (self.entries or self.battles):
            listed = ", ".join(f"{e.engine_id} ({e.reason})" for e in self.excluded)
            notes.append(f"left out of the fit: {listed}")
        if self.unconverged:
            notes.append(f"{self.unconverged} fits stopped before full convergence")
        if self.anchor is not None and len(self.groups) > 1:
            notes.append(
                f"the anchor {self.anchor[0]} = {self.anchor[1]:g} pins its own group only; "
                "the other groups stay centred on 1000"
            )
        return notes


def _group_order(pairwise: np.ndarray) -> np.ndarray:
    met = sparse.csr_matrix((pairwise + pairwise.T) > 0)
    _, labels = connected_components(met, directed=False)
    return labels


class AnchorError(ValueError):
    """The anchor names an engine that is not rated."""


def rate(
    comparisons: Comparisons,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int | None = None,
    min_battles: int = 1,
    ridge: float = RIDGE,
    ci: str = "bootstrap",
    anchor: tuple[str, float] | None = None,
    style: bool = False,
) -> Leaderboard:
    """Bradley-Terry ratings of these comparisons with 95% intervals: `ci` "bootstrap"
    (`bootstrap` replicates; 0 for none) or "sandwich"; `anchor` pins one engine's rating;
    `style` fits the contextual model (the comparisons loaded with `style=True`)."""
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {', '.join(CI_METHODS)}, not {ci!r}")
    if style and comparisons.style is None:
        raise ValueError("style control needs comparisons loaded with style=True")
    n_engines = len(comparisons.engines)
    counts = np.bincount(comparisons.pattern, minlength=len(comparisons.patterns))
    won = np.zeros((n_engines, n_engines), dtype=np.int64)  # decisive battles
    tied = np.zeros((n_engines, n_engines), dtype=np.int64)  # symmetric
    for pattern, count in zip(comparisons.patterns, counts.tolist(), strict=True):
        if count:
            for a, b, outcome in pattern_battles(pattern):
                if outcome == WIN:
                    won[a, b] += count
                elif outcome == LOSS:
                    won[b, a] += count
                else:
                    tied[a, b] += count
                    tied[b, a] += count
    wins = won + tied / 2.0
    battles = won.sum(axis=1) + won.sum(axis=0) + tied.sum(axis=1)
    outright = won.sum(axis=1)
    ties = tied.sum(axis=1)

    # Who is rated: enough battles, and battles among the rated.
    threshold = max(min_battles, 1)
    reasons = {
        e: "no battles" if battles[e] == 0 else f"{battles[e]} battles < {threshold}"
        for e in range(n_engines)
        if battles[e] < threshold
    }
    kept = np.array([e for e in range(n_engines) if e not in reasons], dtype=np.int64)
    among = wins[np.ix_(kept, kept)]
    alone = (among.sum(axis=0) + among.sum(axis=1)) == 0
    for e in kept[alone]:
        reasons[int(e)] = "battles only against engines left out"
    rated = kept[~alone]

    def entry(e: int, **more: Any) -> Entry:
        name = comparisons.engines[e]
        return Entry(name, int(battles[e]), int(outright[e]), int(ties[e]), **more)

    excluded = sorted(
        (entry(e, reason=why) for e, why in reasons.items()),
        key=lambda x: (-x.battles, x.engine_id),
    )
    board = Leaderboard(
        [], excluded, [], len(comparisons), int(won.sum() + tied.sum() // 2), bootstrap, seed,
        min_battles, np.zeros((0, 0)), ci=ci, anchor=anchor, ridge=ridge,
    )  # fmt: skip
    if len(rated) < 2:
        return board

    local = np.full(n_engines, -1, dtype=np.int64)
    local[rated] = np.arange(len(rated))
    pairwise = wins[np.ix_(rated, rated)]
    group = _group_order(pairwise)
    pin = None
    if anchor is not None:
        position = comparisons.engines.index(anchor[0]) if anchor[0] in comparisons.engines else -1
        if position < 0 or local[position] < 0:
            raise AnchorError(f"anchor {anchor[0]!r} is not among the rated engines")
        pin = (int(local[position]), float(anchor[1]))

    fitted = _fit(comparisons, counts, local, len(rated), pairwise, ridge, style)
    rating = to_ratings(fitted.beta, group, pin)
    low = high = None
    if ci == "sandwich":
        transform = rating_transform(group, pin)
        covariance = transform @ fitted.covariance()[: len(rated), : len(rated)] @ transform.T
        half = Z95 * SCALE * np.sqrt(np.clip(np.diag(covariance), 0.0, None))
        low, high = rating - half, rating + half
    elif bootstrap > 0:
        replicates = fitted.replicates(bootstrap, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a group absent from a draw
            ratings = to_ratings(replicates[:, : len(rated)], group, pin)
            low, high = np.nanpercentile(ratings, [2.5, 97.5], axis=0)
    if style:
        board.style = fitted.coefficients(bootstrap, seed, ci)

    entries = []
    for i, e in enumerate(rated):
        item = entry(int(e), rating=float(rating[i]))
        if low is not None and high is not None:
            item.ci_low, item.ci_high = _number(low[i]), _number(high[i])
        entries.append(item)
    _rank(entries, group)

    # Groups: largest first, then by their best rating; entries best first within a group.
    sizes_of = np.bincount(group)
    best = {g: max(entries[i].rating for i in np.flatnonzero(group == g)) for g in set(group)}
    order_of = sorted(set(group), key=lambda g: (-sizes_of[g], -best[g]))
    renumber = {g: k for k, g in enumerate(order_of)}
    for i, item in enumerate(entries):
        item.group = renumber[group[i]]
    order = sorted(range(len(entries)), key=lambda i: _best_first(entries[i]))
    board.entries = [entries[i] for i in order]
    board.pairwise = pairwise[np.ix_(order, order)]
    board.groups = [
        [e.engine_id for e in board.entries if e.group == g] for g in range(len(order_of))
    ]
    board.unconverged = fitted.unconverged()
    in_fit_won = pairwise.sum(axis=1)
    in_fit = in_fit_won + pairwise.sum(axis=0)
    board.undefeated = [comparisons.engines[rated[i]] for i in order if in_fit_won[i] == in_fit[i]]
    board.winless = [comparisons.engines[rated[i]] for i in order if in_fit_won[i] == 0]
    return board


class _Pairwise:
    """The plain fit on the pairwise matrix, its bootstrap and its sandwich."""

    def __init__(self, comparisons: Comparisons, counts: np.ndarray, local: np.ndarray,
                 n_rated: int, pairwise: np.ndarray, ridge: float) -> None:  # fmt: skip
        met = np.triu((pairwise + pairwise.T) > 0, 1)
        first, second = np.nonzero(met)
        self.model = BradleyTerry(n_rated, first, second, ridge)
        self.beta = self.model.fit(pairwise)
        self.kinds = kinds_of(comparisons, counts, local)
        self.n, self.ridge = n_rated, ridge

    def covariance(self) -> np.ndarray:
        return sandwich(self.kinds, self.n, self.beta, self.ridge)

    def replicates(self, count: int, seed: int | None) -> np.ndarray:
        return bootstrap_betas(self.kinds, self.n, self.model, count, seed)

    def coefficients(self, count: int, seed: int | None, ci: str) -> list[StyleCoefficient]:
        return []

    def unconverged(self) -> int:
        return self.model.unconverged


class _Contextual:
    """The style-controlled fit on the battles one by one, its bootstrap (comparisons drawn
    with replacement, each replicate refit from the point estimate) and its sandwich."""

    def __init__(self, comparisons: Comparisons, local: np.ndarray, n_rated: int,
                 ridge: float) -> None:  # fmt: skip
        rows = comparisons.style
        assert rows is not None
        first, second = local[rows.first], local[rows.second]
        keep = (first >= 0) & (second >= 0)
        self.cluster = rows.comparison[keep]
        self.comparisons = len(comparisons)
        self.model = ContextualBradleyTerry(
            n_rated, first[keep], second[keep], rows.outcome[keep],
            normalized(rows.features[keep]), ridge,
        )  # fmt: skip
        self.theta = self.model.fit()
        self.beta = self.theta[:n_rated]
        self.n = n_rated
        self._replicates: np.ndarray | None = None
        self._covariance: np.ndarray | None = None

    def covariance(self) -> np.ndarray:
        if self._covariance is None:
            self._covariance = self.model.sandwich(self.theta, self.cluster)
        return self._covariance

    def replicates(self, count: int, seed: int | None) -> np.ndarray:
        """θ of each replicate, NaN for engines that drew no battle."""
        if self._replicates is None or len(self._replicates) != count:
            rng = np.random.default_rng(seed)
            out = np.empty((count, len(self.theta)))
            for r in range(count):
                drawn = rng.multinomial(
                    self.comparisons, np.full(self.comparisons, 1.0 / self.comparisons)
                )
                weight = drawn[self.cluster].astype(np.float64)
                theta = self.model.fit(weight, start=self.theta)
                present = np.bincount(self.model.first, weight, self.n) + np.bincount(
                    self.model.second, weight, self.n
                )
                theta[: self.n][present == 0] = np.nan
                out[r] = theta
            self._replicates = out
        return self._replicates

    def coefficients(self, count: int, seed: int | None, ci: str) -> list[StyleCoefficient]:
        gamma = self.theta[self.n :]
        if ci == "sandwich":
            sd = np.sqrt(np.clip(np.diag(self.covariance())[self.n :], 0.0, None))
            low, high = gamma - Z95 * sd, gamma + Z95 * sd
        elif count > 0:
            low, high = np.percentile(
                self.replicates(count, seed)[:, self.n :], [2.5, 97.5], axis=0
            )
        else:
            return [StyleCoefficient(f, float(g)) for f, g in zip(FEATURES, gamma, strict=True)]
        return [
            StyleCoefficient(f, float(g), float(lo), float(hi))
            for f, g, lo, hi in zip(FEATURES, gamma, low, high, strict=True)
        ]

    def unconverged(self) -> int:
        return 0


def _fit(comparisons: Comparisons, counts: np.ndarray, local: np.ndarray, n_rated: int,
         pairwise: np.ndarray, ridge: float, style: bool) -> _Pairwise | _Contextual:  # fmt: skip
    if style:
        return _Contextual(comparisons, local, n_rated, ridge)
    return _Pairwise(comparisons, counts, local, n_rated, pairwise, ridge)


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _best_first(entry: Entry) -> tuple[Any, ...]:
    return (entry.group, -(entry.rating or 0.0), entry.engine_id)


def _rank(entries: Sequence[Entry], group: np.ndarray) -> None:
    """Arena's upper-bound rank, within each connected group."""
    for i, entry in enumerate(entries):
        peers = [entries[j] for j in np.flatnonzero(group == group[i])]
        if entry.ci_high is not None:
            above = sum(1 for p in peers if p.ci_low is not None and p.ci_low > entry.ci_high)
        else:
            above = sum(1 for p in peers if (p.rating or 0.0) > (entry.rating or 0.0))
        entry.rank = 1 + above


# --- ratings over time ---------------------------------------------------------------------


def ratings_over_time(
    comparisons: Comparisons,
    window_ms: int,
    bootstrap: int = 100,
    seed: int | None = 0,
    min_comparisons: int = 30,
    min_battles: int = 1,
) -> list[tuple[int, Leaderboard]]:
    """(window start, leaderboard of its comparisons alone) for each window of `window_ms`
    (aligned to the epoch, by `timestamp`) that holds at least `min_comparisons`; untimed
    comparisons are left out."""
    timed = comparisons.select(comparisons.timed())
    if not len(timed):
        return []
    start = timed.timestamp - timed.timestamp % window_ms
    out = []
    for window in np.unique(start):
        mask = start == window
        if mask.sum() < min_comparisons:
            continue
        board = rate(timed.select(mask), bootstrap, seed, min_battles)
        if board.entries:
            out.append((int(window), board))
    return out
