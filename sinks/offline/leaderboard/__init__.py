"""An Arena-style leaderboard: Bradley-Terry ratings with intervals (issues 16, 28).

One module per concern: `battles` (comparisons reduced to battle patterns, categories, and
the battles one by one for style control), `fit` (the pairwise Bradley-Terry fit and the
rating scale), `intervals` (bootstrap and sandwich of the pairwise fit), `style` (the
contextual fit with Arena's style features), `board` (who is rated, anchor, ranks, notes).
The README's Leaderboard section states the model.
"""

from sinks.offline.leaderboard.battles import (
    NO_TIME,
    Comparisons,
    comparisons_from,
    load_comparisons,
)
from sinks.offline.leaderboard.board import (
    CI_METHODS,
    DEFAULT_BOOTSTRAP,
    FIELDS,
    AnchorError,
    Entry,
    Leaderboard,
    StyleCoefficient,
    rate,
    ratings_over_time,
)
from sinks.offline.leaderboard.fit import BASE, RIDGE, SCALE, BradleyTerry, to_ratings
from sinks.offline.leaderboard.style import FEATURES

__all__ = [
    "BASE",
    "CI_METHODS",
    "DEFAULT_BOOTSTRAP",
    "FEATURES",
    "FIELDS",
    "NO_TIME",
    "RIDGE",
    "SCALE",
    "AnchorError",
    "BradleyTerry",
    "Comparisons",
    "Entry",
    "Leaderboard",
    "StyleCoefficient",
    "comparisons_from",
    "load_comparisons",
    "rate",
    "ratings_over_time",
    "to_ratings",
]
