"""Is an engine's window significantly worse than its own recent past?

Fixed thresholds raise false alarms on quiet engines (3 failures in 10 calls is not 3,000 in
10,000) and miss a drop on a busy one. Each emitted window is tested instead against the
engine's *baseline*: its previous `regression.baseline_windows` emitted windows that had
executions, in window order.

- **Success drop**: a one-sided two-proportion test of the window's failures against the
  baseline's pooled ones, Fisher's exact test; a finding when its p-value is below
  `regression.alpha`, the false-alarm rate per tested window on stationary data. Both need
  `min_count` executions. Exact rather than the z-test's normal approximation: engines
  succeed 95-99% of the time, so a window expects few failures, and there the z-test raised
  2.8 times alpha in false alarms (tests/test_regression.py measures both).
- **p95 shift**: the window's p95 latency above `p95_factor` times the median of the
  baseline windows' p95 (windows with `p95_min_count` executions; at least 3 of them). The
  p95 of 40 lognormal latencies (sigma 0.8) is twice its median 0.5% of the time, of 100
  0.015%: hence its own, larger minimum.

The verdict depends only on the engine's sequence of aggregated_stats records, so the
worker (streams/aggregates/merge.py, state in its changelog) and the batch twin
(`find_alerts` on recomputed windows) find the same alerts.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from streams.config import JsonEngineConfig, RegressionConfig

MIN_P95_WINDOWS = 3
HOUR_MS = 3_600_000
Baseline = list[list[float]]  # [count, success_count, p95] per window, oldest first


def fisher_less(n0: int, s0: int, n1: int, s1: int) -> float:
    """One-sided p-value of Fisher's exact test: the chance, with the margins fixed, that the
    window holds at least its failures if both share one success rate."""
    from scipy.stats import fisher_exact  # on first use: scipy.stats adds ~0.5 s to start-up

    table = [[n1 - s1, s1], [n0 - s0, s0]]  # failures and successes: window, baseline
    return float(fisher_exact(table, alternative="greater").pvalue)


def success_drop(
    record: dict[str, Any], baseline: Baseline, config: RegressionConfig
) -> dict[str, Any] | None:
    n1, s1 = record["count"], record["success_count"]
    n0 = sum(w[0] for w in baseline)
    s0 = sum(w[1] for w in baseline)
    if n1 < config.min_count or n0 < config.min_count:
        return None
    p_value = fisher_less(n0, s0, n1, s1) if s1 / n1 < s0 / n0 else 1.0
    if p_value >= config.alpha:
        return None
    return {
        "kind": "success_rate_drop",
        "test": "fisher_exact",
        "window": {"count": n1, "success_count": s1, "success_rate": s1 / n1},
        "baseline": {
            "windows": len(baseline),
            "count": n0,
            "success_count": s0,
            "success_rate": s0 / n0,
        },
        "p_value": p_value,
        "alpha": config.alpha,
    }


def p95_shift(
    record: dict[str, Any], baseline: Baseline, config: RegressionConfig
) -> dict[str, Any] | None:
    if record["count"] < config.p95_min_count:
        return None
    p95s = [w[2] for w in baseline if w[0] >= config.p95_min_count]
    if len(p95s) < MIN_P95_WINDOWS:
        return None
    median = statistics.median(p95s)
    p95 = record["latency_ms"]["p95"]
    if median <= 0 or p95 <= config.p95_factor * median:
        return None
    return {
        "kind": "p95_shift",
        "test": "ratio_to_baseline_median",
        "window": {"count": record["count"], "p95": p95},
        "baseline": {"windows": len(p95s), "median_p95": median},
        "ratio": p95 / median,
        "factor": config.p95_factor,
    }


def forget_ms(config: JsonEngineConfig) -> int:
    return round(config.aggregation.forget_engines_after_hours * HOUR_MS)


def forgotten(last: dict[str, Any] | None, record: dict[str, Any], forget_ms: int) -> bool:
    """Was the engine forgotten between its last window and this one? (Its baseline starts
    anew: a week-old past says little, and the merge keeps no state that long.)"""
    return last is not None and record["window_start"] - last["window_end"] >= forget_ms


def check(
    record: dict[str, Any], baseline: Baseline, config: RegressionConfig
) -> dict[str, Any] | None:
    """The alert record of this window, if it is worse than the baseline; then the window
    joins the baseline (in place), which keeps its last `baseline_windows`."""
    if record["count"] == 0:  # comparisons only: nothing to test, nothing to learn
        return None
    found = [f for test in (success_drop, p95_shift) if (f := test(record, baseline, config))]
    baseline.append([record["count"], record["success_count"], record["latency_ms"]["p95"]])
    del baseline[: -config.baseline_windows]
    if not found:
        return None
    return {
        "schema_version": 1,
        "alert_id": f"{record['engine_id']}|{record['window_start']}",
        "engine_id": record["engine_id"],
        "window_start": record["window_start"],
        "window_end": record["window_end"],
        "findings": found,
    }


def find_alerts(
    records: Iterable[dict[str, Any]], config: RegressionConfig, forget_ms: int
) -> list[dict]:
    """The twin's alerts: each engine's windows in window order, as the worker emits them,
    forgetting an engine's baseline after `forget_ms` without a window, as the merge does."""
    baselines: dict[str, Baseline] = {}
    last: dict[str, dict[str, Any]] = {}
    alerts = []
    for record in sorted(records, key=lambda r: (r["engine_id"], r["window_start"])):
        engine_id = record["engine_id"]
        if forgotten(last.get(engine_id), record, forget_ms):
            baselines[engine_id] = []
        last[engine_id] = record
        alert = check(record, baselines.setdefault(engine_id, []), config)
        if alert is not None:
            alerts.append(alert)
    return sorted(alerts, key=lambda a: (a["window_start"], a["engine_id"]))
