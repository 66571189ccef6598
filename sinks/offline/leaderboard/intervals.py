"""Intervals of the pairwise fit: the bootstrap over comparisons and the sandwich (issue 28).

Both treat the comparison as the unit of independence: its battles share a judge and a
query (a winner beats every other candidate at once), so they are resampled together and
their scores are summed before they are squared.

- **Bootstrap** (issue 16): comparisons with the same battles among the rated engines are
  interchangeable for the fit, so drawing n comparisons with replacement is the same, in
  distribution, as drawing how many copies of each such *pattern* from Multinomial(n;
  n_pattern / n). Each replicate's pairwise matrix is the patterns' counts times their
  battles (one sparse product), and the fit runs on that. Exact, and O(patterns) per
  replicate whatever n. For two-candidate comparisons the patterns are the cells of the
  matrix (with ties, the tie cells too): Arena's multinomial over the pairwise counts.
- **Sandwich**: the robust (Huber-White) covariance H⁻¹ J H⁻¹ at the fitted β, with H the
  Hessian of the penalized negative log-likelihood and J the sum over comparisons of the
  outer product of each comparison's score (per pattern: count x s sᵀ). One fit instead of a
  thousand. For two-candidate comparisons this is arena-rank's estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.special import expit

from sinks.offline.leaderboard.battles import Comparisons, pattern_battles
from sinks.offline.leaderboard.fit import BradleyTerry

_CHUNK = 100  # bootstrap replicates drawn at once (memory: chunk x patterns counts)


@dataclass(frozen=True)
class Kinds:
    """The comparisons as kinds with the same battles among the rated engines: `weight[k]`
    comparisons of kind k; battle b is `first[b]` against `second[b]` with `outcome[b]` for the
    first, in kind `kind[b]`. Kind 0 holds the comparisons without a battle among the rated."""

    weight: np.ndarray
    kind: np.ndarray
    first: np.ndarray
    second: np.ndarray
    outcome: np.ndarray


def kinds_of(comparisons: Comparisons, counts: np.ndarray, local: np.ndarray) -> Kinds:
    """Merge the patterns by their battles among the rated engines (`local` maps an engine
    to its rated index, or -1)."""
    merged: dict[tuple[tuple[int, int, float], ...], int] = {}
    weight = [0]
    kind, first, second, outcome = [], [], [], []
    for pattern, count in zip(comparisons.patterns, counts.tolist(), strict=True):
        if not count:
            continue
        battles = tuple(
            sorted(
                (int(local[a]), int(local[b]), y)
                for a, b, y in pattern_battles(pattern)
                if local[a] >= 0 and local[b] >= 0
            )
        )
        if not battles:
            weight[0] += count
            continue
        k = merged.get(battles)
        if k is None:
            k = merged[battles] = len(weight)
            weight.append(0)
            for a, b, y in battles:
                kind.append(k)
                first.append(a)
                second.append(b)
                outcome.append(y)
        weight[k] += count
    return Kinds(
        np.asarray(weight, dtype=np.int64),
        np.asarray(kind, dtype=np.int64),
        np.asarray(first, dtype=np.int64),
        np.asarray(second, dtype=np.int64),
        np.asarray(outcome, dtype=np.float64),
    )


def bootstrap(
    kinds: Kinds, n_rated: int, model: BradleyTerry, replicates: int, seed: int | None
) -> np.ndarray:
    """β of every rated engine in each replicate (NaN where an engine drew no battle)."""
    # a win puts 1 in (first, second); a tie ½ in both cells
    cells = np.concatenate(
        [kinds.first * n_rated + kinds.second, kinds.second * n_rated + kinds.first]
    )
    values = np.concatenate([kinds.outcome, 1.0 - kinds.outcome])
    owners = np.concatenate([kinds.kind, kinds.kind])
    keep = values > 0
    battles_of = sparse.csr_matrix(
        (values[keep], (owners[keep], cells[keep])), shape=(len(kinds.weight), n_rated * n_rated)
    )  # duplicate (kind, cell) entries add up: a loser listed twice loses twice
    total = int(kinds.weight.sum())
    probability = kinds.weight / total
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


def sandwich(kinds: Kinds, n_rated: int, beta: np.ndarray, ridge: float) -> np.ndarray:
    """The robust covariance of β (n_rated x n_rated) at the fitted β."""
    p = expit(beta[kinds.first] - beta[kinds.second])
    g = kinds.outcome - p  # the score of each battle, for its first engine
    scores = np.zeros((len(kinds.weight), n_rated))
    np.add.at(scores, (kinds.kind, kinds.first), g)
    np.add.at(scores, (kinds.kind, kinds.second), -g)
    meat = scores.T @ (kinds.weight[:, None] * scores)
    h = kinds.weight[kinds.kind] * p * (1.0 - p)
    cells = np.zeros((n_rated, n_rated))
    np.add.at(cells, (kinds.first, kinds.second), h)
    cells = cells + cells.T
    hessian = np.diag(cells.sum(axis=1)) - cells + ridge * np.eye(n_rated)
    bread = np.linalg.inv(hessian)
    return bread @ meat @ bread
