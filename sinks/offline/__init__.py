"""Offline analyses of the sunk files (they read finished lines, never a broker).

`aggregate_batch` (the aggregator's batch twin, pandas), `report` (the HTML report),
`export` (training data for fine-tuning), `leaderboard` (Bradley-Terry ratings).
"""
