"""Our leaderboard against LMArena's own code (issue 28): the `arena-rank` package is the
oracle, on seeded Arena-shaped data (two candidates, ties of both kinds, categories, answers
whose length and markdown move the odds).

Adversary: a fit, a tie rule, a feature normalization or an interval that differs from what
LMArena computes. Tolerances are the issue's: ratings within 1 point, interval widths within
10% (sandwich) and 20% (bootstrap). The oracle gets the style features from the test's own
record of what it wrote into each answer, never from our feature extraction.

arena-rank's own bootstrap fans out over a multiprocessing pool forked after JAX started,
which hangs, and each of its replicate fits compiles anew (seconds each). So its bootstrap is
taken apart: its draws (jax.random, as `compute_ratings_and_cis` draws them), its replicate
fit (`fit_single_bootstrap_sample`) checked against ours on the same draws, replicate by
replicate, and then our fit for the rest of its draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import pandas as pd
import pytest
from arena_rank.models import bradley_terry as arena_bt
from arena_rank.models import contextual_bradley_terry as arena_cbt
from arena_rank.utils.data_utils import ContextualPairDataset, PairDataset

from sinks.offline.leaderboard import RIDGE, SCALE, comparisons_from, rate, to_ratings
from sinks.offline.leaderboard.fit import BradleyTerry
from sinks.offline.leaderboard.style import ContextualBradleyTerry

ENGINES = [f"model-{i}" for i in range(6)]
BETA = np.linspace(-1.0, 1.0, len(ENGINES))
GAMMA = np.array([0.5, 0.3, 0.2, 0.1])  # length, headers, lists, bold: true style effects
CATEGORIES = ["coding", "math", "creative"]
FEATURE_COLUMNS = ["length", "headers", "lists", "bold"]


def answer(rng: np.random.Generator, longest: int) -> tuple[str, np.ndarray]:
    """A markdown answer and what it holds (length, headers, list items, bold spans)."""
    headers, items, bold = (int(x) for x in rng.integers(0, [4, 7, 5]))
    body = "## Part\n" * headers + "- point\n" * items + "a **key** term. " * bold
    text = body + "word " * int(rng.integers(4, longest))
    return text, np.array([len(text), headers, items, bold], dtype=float)


def arena_data(n: int, seed: int) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """n comparisons as our events and as Arena's battle table (model_a, model_b, winner in
    model_a | model_b | tie | both_bad, the relative style differences, category)."""
    rng = np.random.default_rng(seed)
    events, rows = [], []
    for k in range(n):
        a, b = rng.choice(len(ENGINES), size=2, replace=False)
        # the first-listed answer runs longer (as model_a may): the features' means are not 0,
        # so their standardization matters
        (text_a, fa), (text_b, fb) = answer(rng, 600), answer(rng, 300)
        total = fa + fb
        diff = np.divide(fa - fb, total, out=np.zeros(4), where=total > 0)
        p = 1.0 / (1.0 + np.exp(-(BETA[a] - BETA[b] + 3.0 * diff @ GAMMA)))
        draw = rng.random()
        if draw < 0.12:
            outcome = "tie"
        elif draw < 0.2:
            outcome = "both_bad"
        else:
            outcome = "model_a" if rng.random() < p else "model_b"
        category = CATEGORIES[int(rng.integers(0, len(CATEGORIES)))]
        event: dict[str, Any] = {
            "comparison_id": f"arena-{k}",
            "query": f"prompt {k}",
            "candidates": [
                {"engine_id": ENGINES[a], "output": text_a, "metrics": {}},
                {"engine_id": ENGINES[b], "output": text_b, "metrics": {}},
            ],
            "metrics": {},
            "category": category,
        }
        if outcome in ("tie", "both_bad"):
            event["tie"] = outcome
        else:
            winner = ENGINES[a] if outcome == "model_a" else ENGINES[b]
            event["winner"] = {"engine_id": winner, "score": 0.8}
        events.append(event)
        rows.append(
            {
                "model_a": ENGINES[a],
                "model_b": ENGINES[b],
                "winner": outcome,
                "category": category,
                **dict(zip(FEATURE_COLUMNS, diff, strict=True)),
            }
        )
    return events, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def data() -> tuple[list[dict[str, Any]], pd.DataFrame]:
    return arena_data(6000, seed=28)


def by_name(board: Any) -> dict[str, Any]:
    return {e.engine_id: e for e in board.entries}


def assert_same(board: Any, oracle: dict[str, Any], width_tolerance: float) -> None:
    ours = by_name(board)
    assert set(ours) == set(oracle["competitors"])
    for name, rating, low, high in zip(
        oracle["competitors"],
        np.asarray(oracle["ratings"]),
        np.asarray(oracle["rating_lower"]),
        np.asarray(oracle["rating_upper"]),
        strict=True,
    ):
        entry = ours[name]
        assert entry.rating == pytest.approx(float(rating), abs=1.0), name
        width = entry.ci_high - entry.ci_low
        assert width == pytest.approx(float(high - low), rel=width_tolerance), name


def test_ratings_and_sandwich_intervals_with_ties_match_arena_rank(data: Any) -> None:
    events, frame = data
    dataset = PairDataset.from_pandas(frame)
    model = arena_bt.BradleyTerry(n_competitors=len(dataset.competitors))
    oracle = model.compute_ratings_and_cis(dataset, ci_method="sandwich")
    board = rate(comparisons_from(events), ci="sandwich")
    assert_same(board, oracle, 0.10)
    # a tie is one battle, half a win each way: Arena's outcome 0.5
    ties = int((frame["winner"].isin(["tie", "both_bad"])).sum())
    assert sum(e.ties for e in board.entries) == 2 * ties > 0
    assert board.battles == len(frame)


def test_one_category_matches_arena_rank_on_that_category_alone(data: Any) -> None:
    events, frame = data
    subset = frame[frame["category"] == "math"]
    dataset = PairDataset.from_pandas(subset)
    oracle = arena_bt.BradleyTerry(len(dataset.competitors)).compute_ratings_and_cis(
        dataset, ci_method="sandwich"
    )
    board = rate(comparisons_from(events).in_category("math"), ci="sandwich")
    assert board.comparisons == len(subset)
    assert_same(board, oracle, 0.10)


def test_style_control_matches_arena_rank(data: Any) -> None:
    """Ratings with style held fixed, the coefficients and the sandwich intervals; the
    oracle's penalty on the coefficients is set to our ridge (its loss is a mean: / n)."""
    events, frame = data
    dataset = ContextualPairDataset.from_pandas(frame, FEATURE_COLUMNS, reweighted=False)
    model = arena_cbt.ContextualBradleyTerry(
        len(dataset.competitors), len(FEATURE_COLUMNS), reg=RIDGE / len(frame)
    )
    oracle = model.compute_ratings_and_cis(dataset, ci_method="sandwich")
    board = rate(comparisons_from(events, style=True), ci="sandwich", style=True)
    assert_same(board, oracle, 0.10)
    coefficients = [c.coefficient for c in board.style]
    assert coefficients == pytest.approx(np.asarray(oracle["coeffs"]).tolist(), abs=1e-3)
    assert all(c.ci_low < c.coefficient < c.ci_high for c in board.style)
    # The style is real in this data: plain ratings differ from style-controlled ones.
    plain = by_name(rate(comparisons_from(events), bootstrap=0))
    assert max(abs(plain[n].rating - e.rating) for n, e in by_name(board).items()) > 1.0


def _arena_bootstrap_draws(dataset: PairDataset, replicates: int, seed: int) -> np.ndarray:
    """Counts of each unique (pair, outcome) row per replicate, drawn as arena-rank draws."""
    total = float(np.asarray(dataset.counts).sum())
    draws = jax.random.multinomial(
        key=jax.random.PRNGKey(seed),
        n=total,
        p=dataset.counts / total,
        shape=(replicates, dataset.counts.shape[0]),
        dtype=jax.numpy.float64,
    )
    return np.asarray(draws)


def _pairwise_of(dataset: PairDataset, counts: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Arena's weighted rows as our pairwise matrix (an outcome 0.5 is half each way)."""
    index = [names.index(c) for c in dataset.competitors]
    pairs = np.asarray(dataset.pairs)
    outcomes = np.asarray(dataset.outcomes)
    matrix = np.zeros((len(names), len(names)))
    for (a, b), y, count in zip(pairs, outcomes, counts, strict=True):
        matrix[index[a], index[b]] += y * count
        matrix[index[b], index[a]] += (1.0 - y) * count
    return matrix


def test_bootstrap_matches_arena_rank(data: Any) -> None:
    events, frame = data
    dataset = PairDataset.from_pandas(frame)
    oracle = arena_bt.BradleyTerry(n_competitors=len(dataset.competitors))
    oracle.fit(dataset)
    draws = _arena_bootstrap_draws(dataset, 1000, seed=42)
    names = list(dataset.competitors)
    first, second = np.nonzero(np.triu(np.ones((len(names), len(names))), 1))
    ours = BradleyTerry(len(names), first, second)
    # The oracle's replicate fit equals ours on its own draws.
    for k in range(3):
        theirs = np.asarray(
            arena_bt.fit_single_bootstrap_sample(draws[k], oracle, dataset)["ratings"]
        )
        mine = ours.fit(_pairwise_of(dataset, draws[k], names))
        assert SCALE * (mine - mine.mean()) == pytest.approx(
            oracle.alpha * (theirs - theirs.mean()), abs=1.0
        )
    # The oracle's bootstrap distribution (its 1000 draws) against ours (our own draws).
    betas = np.array([ours.fit(_pairwise_of(dataset, d, names)) for d in draws])
    low, high = np.quantile(to_ratings(betas, np.zeros(len(names), dtype=int)), [0.025, 0.975], 0)
    board = by_name(rate(comparisons_from(events), bootstrap=1000, seed=5))
    for i, name in enumerate(names):
        width = board[name].ci_high - board[name].ci_low
        assert width == pytest.approx(high[i] - low[i], rel=0.20), name


def test_style_bootstrap_matches_arena_rank(data: Any) -> None:
    """arena-rank resamples battles (rows) for the contextual model; with two candidates a
    battle is a comparison, which is what we resample."""
    events, frame = data
    frame = frame.iloc[:2500]
    events = events[:2500]
    dataset = ContextualPairDataset.from_pandas(frame, FEATURE_COLUMNS, reweighted=False)
    n = len(frame)
    oracle = arena_cbt.ContextualBradleyTerry(
        len(dataset.competitors), len(FEATURE_COLUMNS), reg=RIDGE / n
    )
    names = list(dataset.competitors)
    pairs = np.asarray(dataset.pairs)
    ours = ContextualBradleyTerry(
        len(names),
        pairs[:, 0],
        pairs[:, 1],
        np.asarray(dataset.outcomes),
        np.asarray(dataset.features),
        RIDGE,
    )
    keys = jax.random.split(jax.random.PRNGKey(7), 300)
    rows = [np.asarray(jax.random.randint(key, (n,), 0, n)) for key in keys]
    for k in range(2):  # the oracle's replicate fit equals ours on its own draw
        theirs = arena_cbt.fit_single_bootstrap_sample(keys[k], oracle, dataset)
        mine = ours.fit(np.bincount(rows[k], minlength=n).astype(float))
        beta = mine[: len(names)]
        expected = np.asarray(theirs["ratings"])
        assert SCALE * (beta - beta.mean()) == pytest.approx(
            oracle.alpha * (expected - expected.mean()), abs=1.0
        )
        assert mine[len(names) :] == pytest.approx(np.asarray(theirs["coeffs"]), abs=1e-3)
    thetas = np.array([ours.fit(np.bincount(r, minlength=n).astype(float)) for r in rows])
    ratings = to_ratings(thetas[:, : len(names)], np.zeros(len(names), dtype=int))
    low, high = np.quantile(ratings, [0.025, 0.975], axis=0)
    board = rate(comparisons_from(events, style=True), bootstrap=300, seed=3, style=True)
    entries = by_name(board)
    for i, name in enumerate(names):
        width = entries[name].ci_high - entries[name].ci_low
        assert width == pytest.approx(high[i] - low[i], rel=0.20), name
    gamma_low, gamma_high = np.quantile(thetas[:, len(names) :], [0.025, 0.975], axis=0)
    for j, c in enumerate(board.style):
        assert c.ci_high - c.ci_low == pytest.approx(gamma_high[j] - gamma_low[j], rel=0.20)
