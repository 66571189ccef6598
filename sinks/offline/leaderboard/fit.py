"""The Bradley-Terry fit on pairwise win counts, and the rating scale (issue 16).

P(i beats j) = 1 / (1 + e^-(βi - βj)), by maximum likelihood with scikit-learn's
LogisticRegression (Newton-Cholesky solver, no intercept) on the aggregated pairwise design,
as Chatbot Arena fits it: one row `e_i - e_j` per pair that met, labelled 1 with weight "wins
of i over j" and labelled 0 with weight "wins of j over i". A tie adds one half to both
(issue 28): its likelihood ½·log p + ½·log(1 - p) is that of Arena's outcome 0.5. The fit
never sees individual battles, only the pairwise matrix.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

RIDGE = 1e-4
SCALE = 400 / math.log(10)
BASE = 1000.0


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
        self.ridge = ridge
        self.unconverged = 0

    def fit(self, wins: np.ndarray) -> np.ndarray:
        """β of every engine for `wins[i, j]` = battles i won against j, ties counting one
        half each way (a point where the penalized log-likelihood's gradient is within
        tolerance of 0)."""
        weight = np.concatenate(
            [wins[self.first, self.second], wins[self.second, self.first]]
        ).astype(np.float64)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.model.fit(self.x, self.y, sample_weight=weight)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            self.unconverged += 1
        return self.model.coef_[0].copy()


def to_ratings(
    beta: np.ndarray, group: np.ndarray, anchor: tuple[int, float] | None = None
) -> np.ndarray:
    """The Elo scale: centred on 1000 within each connected group, or, in the group of the
    anchor (engine index, rating), pinned to that rating; NaN βs are ignored."""
    rating = np.full(beta.shape, np.nan)
    for g in np.unique(group):
        members = group == g
        if anchor is not None and group[anchor[0]] == g:
            centre = beta[..., anchor[0] : anchor[0] + 1]
            base = anchor[1]
        else:
            centre = np.nanmean(beta[..., members], axis=-1, keepdims=True)
            base = BASE
        rating[..., members] = base + SCALE * (beta[..., members] - centre)
    return rating


def rating_transform(group: np.ndarray, anchor: tuple[int, float] | None = None) -> np.ndarray:
    """The linear map T with ratings = offset + SCALE · T β (what `to_ratings` does), for
    carrying a covariance of β over to the ratings: T V Tᵀ."""
    n = len(group)
    transform = np.eye(n)
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        if anchor is not None and group[anchor[0]] == g:
            transform[np.ix_(members, [anchor[0]])] -= 1.0
        else:
            transform[np.ix_(members, members)] -= 1.0 / len(members)
    return transform
