"""An Arena-style leaderboard: Bradley-Terry ratings with bootstrap intervals (issue 16).

From the finished comparison_result lines:

- **Battles.** A comparison gives one battle between its winner and each other candidate
  entry whose engine_id differs from the winner's; the winner wins each. An engine listed
  twice among the losers loses twice; entries of the winner's own engine give none.
- **Fit.** Bradley-Terry by maximum likelihood, P(i beats j) = 1 / (1 + e^-(βi - βj)), with
  scikit-learn's LogisticRegression (Newton-Cholesky solver, no intercept) on the aggregated
  pairwise design, as Chatbot Arena fits it: one row `e_i - e_j` per pair that met, labelled
  1 with weight "wins of i over j" and labelled 0 with weight "wins of j over i". The fit
  never sees individual battles, only the pairwise win-count matrix.
- **Ridge.** An L2 penalty (RIDGE / 2) · Σ βi² with RIDGE = 1e-4 (LogisticRegression's
  C = 1 / RIDGE), the prior of a N(0, 10⁴) on every β: it shifts a rating of a well-measured
  engine by far less than 0.01 point, and gives an engine that never lost (or never won) a
  finite rating instead of an infinite one. Such a rating is a bound set by the ridge, not a
  measurement; `Leaderboard.notes` says so. As the likelihood is invariant under a common
  shift, the penalty also centres the βs (their mean is 0 in every connected group).
- **Scale.** rating = 1000 + 400 / ln(10) · (βi - mean β), so the mean rating is 1000.
- **Intervals.** The nonparametric bootstrap over comparisons, computed on sufficient
  statistics: comparisons with the same battles (same winner, same losers among the rated
  engines) are interchangeable for the fit, so drawing n comparisons with replacement is the
  same, in distribution, as drawing the number of copies of each such *pattern* from
  Multinomial(n; n_pattern / n) — the aggregation property of the multinomial. Each
  replicate's pairwise count matrix is then the patterns' counts times their battles (one
  sparse product), and the fit runs on that matrix. This is exact, not an approximation, and
  keeps the battles of one comparison together (they share a winner, so they are not
  independent; a multinomial over the matrix's cells would treat them as if they were). For
  two-candidate comparisons the patterns are the cells of the matrix, and the scheme is
  Arena's multinomial over the pairwise counts. Cost: O(patterns) per replicate, whatever n.
  `ci_low` / `ci_high` are the 2.5th / 97.5th percentiles of the replicates' ratings.
- **Rank.** 1 + the number of engines (of the same connected group) whose `ci_low` is above
  this engine's `ci_high`; tied engines share a rank. Without intervals (`bootstrap=0`):
  1 + the number of engines rated higher.
- **Left out.** Engines with no battle, or fewer than `min_battles`, are left out of the fit
  (their battles too) and listed apart, as are engines whose only battles were against those.
  `battles`, `wins` and `win_rate` count every battle of an engine, left-out opponents
  included; `min_battles` is judged on that count.
- **Groups.** When some engines never met the others, even through third engines, their
  ratings cannot be compared: each connected group is centred on 1000 on its own and ranked
  within itself, and the notes name the groups.
"""

from __future__ import annotations

import math
import warnings
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sinks.reader import iter_lines

RIDGE = 1e-4
SCALE = 400 / math.log(10)
BASE = 1000.0
DEFAULT_BOOTSTRAP = 1000
NO_TIME = np.iinfo(np.int64).min  # a comparison without `timestamp`
FIELDS = ("engine_id", "rating", "ci_low", "ci_high", "rank", "battles", "wins", "win_rate")
_CHUNK = 100  # bootstrap replicates drawn at once (memory: chunk x patterns counts)


# --- the comparisons, reduced to their battles ---------------------------------------------


@dataclass(frozen=True)
class Comparisons:
    """Comparisons reduced to what the leaderboard needs.

    `engines` names every engine seen as a candidate (index → engine_id); `patterns` holds the
    distinct battle patterns (winner, losers with repetition, as sorted engine indexes); each
    comparison is one entry of `pattern` (an index into `patterns`) and `timestamp` (epoch ms,
    NO_TIME when absent).
    """

    engines: tuple[str, ...]
    patterns: tuple[tuple[int, tuple[int, ...]], ...]
    pattern: np.ndarray = field(repr=False)
    timestamp: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.pattern)

    def select(self, mask: np.ndarray) -> Comparisons:
        """The comparisons where `mask` is true (same engines and patterns)."""
        return Comparisons(self.engines, self.patterns, self.pattern[mask], self.timestamp[mask])

    def timed(self) -> np.ndarray:
        return self.timestamp != NO_TIME


def comparisons_from(events: Iterable[dict[str, Any]]) -> Comparisons:
    """Reduce comparison_result objects (already parsed, already validated)."""
    index: dict[str, int] = {}
    patterns: dict[tuple[int, tuple[int, ...]], int] = {}
    pattern = array("q")
    timestamp = array("q")
    for event in events:
        winner = event["winner"]["engine_id"]
        losers = []
        for candidate in event["candidates"]:
            engine = candidate["engine_id"]
            code = index.get(engine)
            if code is None:
                code = index[engine] = len(index)
            if engine != winner:
                losers.append(code)
        w = index.get(winner)
        if w is None:  # refused by the validator; kept harmless all the same
            w = index[winner] = len(index)
        losers.sort()
        key = (w, tuple(losers))
        p = patterns.get(key)
        if p is None:
            p = patterns[key] = len(patterns)
        pattern.append(p)
        ts = event.get("timestamp")
        timestamp.append(NO_TIME if ts is None else int(ts))
    return Comparisons(
        tuple(index),
        tuple(patterns),
        np.frombuffer(pattern, dtype=np.int64).copy(),
        np.frombuffer(timestamp, dtype=np.int64).copy(),
    )


def load_comparisons(
    directory: str | Path, since: int | None = None, until: int | None = None
) -> Comparisons:
    """The finished comparison lines of a channel directory with `timestamp` in
    [since, until) (epoch ms); the reader opens only the hourly buckets of the range."""
    return comparisons_from(orjson.loads(line) for line in iter_lines(directory, since, until))


# --- the fit -------------------------------------------------------------------------------


class BradleyTerry:
    """The Bradley-Terry ML fit (with the ridge) for one set of engines and the pairs of them
    that met: one design matrix, refit on any pairwise win-count matrix of those engines."""

    def __init__(self, n_engines: int, first: np.ndarray, second: np.ndarray, ridge: float = RIDGE):
        self.n = n_engines
        self.first, self.second = first, second
        rows = len(first)
        design = np.zeros((rows, n_engines))
        design[np.arange(rows), first] = 1.0
        design[np.arange(rows), second] = -1.0
        self.x = np.vstack([design, design])
        self.y = np.concatenate([np.ones(rows), np.zeros(rows)])
        self.model = LogisticRegression(
            C=1.0 / ridge, fit_intercept=False, solver="newton-cholesky", tol=1e-8, max_iter=100
        )
        self.unconverged = 0

    def fit(self, wins: np.ndarray) -> np.ndarray:
        """β of every engine for `wins[i, j]` = battles i won against j (a point where the
        penalized log-likelihood's gradient is within tolerance of 0)."""
        weight = np.concatenate(
            [wins[self.first, self.second], wins[self.second, self.first]]
        ).astype(np.float64)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.model.fit(self.x, self.y, sample_weight=weight)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            self.unconverged += 1
        return self.model.coef_[0].copy()


def to_ratings(beta: np.ndarray, group: np.ndarray) -> np.ndarray:
    """The Elo scale, centred on 1000 within each connected group; NaN βs are ignored."""
    rating = np.full(beta.shape, np.nan)
    for g in np.unique(group):
        members = group == g
        centre = np.nanmean(beta[..., members], axis=-1, keepdims=True)
        rating[..., members] = BASE + SCALE * (beta[..., members] - centre)
    return rating


# --- the leaderboard -----------------------------------------------------------------------


@dataclass
class Entry:
    engine_id: str
    battles: int
    wins: int
    rating: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    rank: int | None = None
    group: int = 0  # connected group, 0 the largest
    reason: str = ""  # why it is left out of the fit

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.battles if self.battles else None

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
    pairwise: np.ndarray  # wins[i, j] among `entries`, in their order
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
        return notes


def _group_order(pairwise: np.ndarray) -> np.ndarray:
    met = sparse.csr_matrix((pairwise + pairwise.T) > 0)
    _, labels = connected_components(met, directed=False)
    return labels


def rate(
    comparisons: Comparisons,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int | None = None,
    min_battles: int = 1,
    ridge: float = RIDGE,
) -> Leaderboard:
    """Bradley-Terry ratings of these comparisons, with `bootstrap` replicates for intervals."""
    n_engines = len(comparisons.engines)
    counts = np.bincount(comparisons.pattern, minlength=len(comparisons.patterns))
    winners = np.array([w for w, _ in comparisons.patterns], dtype=np.int64)
    sizes = np.array([len(losers) for _, losers in comparisons.patterns], dtype=np.int64)
    losers = np.fromiter(
        (loser for _, ls in comparisons.patterns for loser in ls), dtype=np.int64, count=sizes.sum()
    )
    owner = np.repeat(np.arange(len(sizes)), sizes)  # pattern of each (winner, loser) battle

    wins = np.zeros((n_engines, n_engines), dtype=np.int64)
    np.add.at(wins, (winners[owner], losers), counts[owner])
    battles = wins.sum(axis=1) + wins.sum(axis=0)
    won = wins.sum(axis=1)

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

    excluded = sorted(
        (
            Entry(comparisons.engines[e], int(battles[e]), int(won[e]), reason=why)
            for e, why in reasons.items()
        ),
        key=lambda x: (-x.battles, x.engine_id),
    )
    board = Leaderboard(
        [], excluded, [], len(comparisons), int(wins.sum()), bootstrap, seed, min_battles,
        np.zeros((0, 0), dtype=np.int64), ridge=ridge,
    )  # fmt: skip
    if len(rated) < 2:
        return board

    local = np.full(n_engines, -1, dtype=np.int64)
    local[rated] = np.arange(len(rated))
    pairwise = wins[np.ix_(rated, rated)]
    group = _group_order(pairwise)
    met = np.triu((pairwise + pairwise.T) > 0, 1)
    first, second = np.nonzero(met)
    model = BradleyTerry(len(rated), first, second, ridge)
    rating = to_ratings(model.fit(pairwise), group)

    low = high = None
    if bootstrap > 0:
        replicates = _bootstrap(comparisons, counts, local, len(rated), model, bootstrap, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a group absent from a draw
            ratings = to_ratings(replicates, group)
            low, high = np.nanpercentile(ratings, [2.5, 97.5], axis=0)

    entries = []
    for i, e in enumerate(rated):
        entry = Entry(comparisons.engines[e], int(battles[e]), int(won[e]), float(rating[i]))
        if low is not None and high is not None:
            entry.ci_low, entry.ci_high = _number(low[i]), _number(high[i])
        entries.append(entry)
    _rank(entries, group)

    # Groups: largest first, then by their best rating; entries best first within a group.
    sizes_of = np.bincount(group)
    best = {g: max(entries[i].rating for i in np.flatnonzero(group == g)) for g in set(group)}
    order_of = sorted(set(group), key=lambda g: (-sizes_of[g], -best[g]))
    renumber = {g: k for k, g in enumerate(order_of)}
    for i, entry in enumerate(entries):
        entry.group = renumber[group[i]]
    order = sorted(range(len(entries)), key=lambda i: _best_first(entries[i]))
    board.entries = [entries[i] for i in order]
    board.pairwise = pairwise[np.ix_(order, order)]
    board.groups = [
        [e.engine_id for e in board.entries if e.group == g] for g in range(len(order_of))
    ]
    board.unconverged = model.unconverged
    in_fit_won = pairwise.sum(axis=1)
    in_fit = in_fit_won + pairwise.sum(axis=0)
    board.undefeated = [comparisons.engines[rated[i]] for i in order if in_fit_won[i] == in_fit[i]]
    board.winless = [comparisons.engines[rated[i]] for i in order if in_fit_won[i] == 0]
    return board


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


def _bootstrap(
    comparisons: Comparisons,
    counts: np.ndarray,
    local: np.ndarray,
    n_rated: int,
    model: BradleyTerry,
    replicates: int,
    seed: int | None,
) -> np.ndarray:
    """β of every rated engine in each replicate (NaN where an engine drew no battle).

    Patterns are merged by their battles among the rated engines; those with none (e.g. only
    against engines left out) stay one category, so every replicate still draws n comparisons.
    """
    merged: dict[tuple[int, tuple[int, ...]], int] = {}
    weight = [0]  # category 0: comparisons without a battle among the rated
    rows, cols = [], []
    for (w, losers), count in zip(comparisons.patterns, counts.tolist(), strict=True):
        if not count:
            continue
        winner = local[w]
        kept = tuple(int(local[x]) for x in losers if local[x] >= 0) if winner >= 0 else ()
        if not kept:
            weight[0] += count
            continue
        key = (int(winner), kept)
        category = merged.get(key)
        if category is None:
            category = merged[key] = len(weight)
            weight.append(0)
            for loser in kept:
                rows.append(category)
                cols.append(winner * n_rated + loser)
        weight[category] += count
    battles_of = sparse.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(weight), n_rated * n_rated)
    )  # duplicate (category, cell) entries add up: a loser listed twice loses twice
    total = int(sum(weight))
    probability = np.asarray(weight, dtype=np.float64) / total
    rng = np.random.default_rng(seed)
    betas = np.empty((replicates, n_rated))
    for start in range(0, replicates, _CHUNK):
        draws = rng.multinomial(total, probability, size=min(_CHUNK, replicates - start))
        matrices = np.asarray((battles_of.T @ draws.T).T).reshape(-1, n_rated, n_rated)
        for k, matrix in enumerate(matrices):
            beta = model.fit(matrix)
            absent = (matrix.sum(axis=0) + matrix.sum(axis=1)) == 0
            beta[absent] = np.nan
            betas[start + k] = beta
    return betas


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
