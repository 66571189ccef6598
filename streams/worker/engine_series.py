"""Live per-engine series: each engine's last emitted window, as Prometheus gauges.

The worker that holds an engine's merge partition is the only one that emits its windows,
and it keeps the engine's last record in the merge's changelog state
(streams/aggregates/merge.py). The series are a view of that state, refreshed when it
changes: a partition taken over brings its engines' series to the new owner (restored with
the state), a partition released takes them away from the old one, so no engine is
reported by two workers at once. Series of a value a window does not have (no comparisons,
no tokens, no price) are absent rather than zero.

At most `metrics.max_engines` engines are exported per worker, the first by engine_id (a
stable choice: an engine's series do not come and go with traffic); the rest are counted
in `json_engine_engine_series_over_cap`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
Point = tuple[str, tuple[str, ...], float]  # gauge, labels after engine_id, value


class EngineSeries:
    def __init__(self, registry: CollectorRegistry, max_engines: int):
        self.max_engines = max_engines
        e = ["engine_id"]

        def gauge(name: str, doc: str, labels: list[str] = e) -> Gauge:
            return Gauge(f"json_engine_engine_{name}", doc, labels, registry=registry)

        self.gauges = {
            "executions": gauge("executions", "Executions in the engine's last emitted window"),
            "success_rate": gauge("success_rate", "Success rate of the last window (0..1)"),
            "latency_ms": gauge(
                "latency_ms", "Latency quantiles of the last window (ms)", [*e, "quantile"]
            ),
            "ttfc_ms": gauge(
                "time_to_first_chunk_ms",
                "Time to first chunk quantiles of the last window (ms), where reported",
                [*e, "quantile"],
            ),
            "tokens": gauge("tokens", "Tokens of the last window, by kind", [*e, "kind"]),
            "cost": gauge("cost", "Cost of the last window's priced executions", [*e, "currency"]),
            "unpriced": gauge("unpriced_executions", "Executions of the last window not priced"),
            "quality": gauge("quality_mean", "Mean quality of the last window, where observed"),
            "comparisons": gauge("comparisons", "Comparisons of the last window"),
            "win_rate": gauge("win_rate", "Win rate of the last window's comparisons (0..1)"),
            "window_end": gauge(
                "window_end_seconds", "End of the engine's last emitted window (epoch seconds)"
            ),
            "window_seconds": gauge("window_seconds", "Length of the engine's windows (s)"),
        }
        self.over_cap = Gauge(
            "json_engine_engine_series_over_cap",
            "Engines held by this worker but not exported (past metrics.max_engines)",
            registry=registry,
        )
        self._shown: dict[str, tuple[dict[str, Any], set[tuple[str, tuple[str, ...]]]]] = {}

    def update(self, records: dict[str, dict[str, Any]]) -> None:
        """Show these engines' last records (engine → record) and nothing else."""
        chosen = sorted(records)[: self.max_engines]
        self.over_cap.set(len(records) - len(chosen))
        wanted = set(chosen)
        for engine_id in [e for e in self._shown if e not in wanted]:
            self._remove(engine_id, self._shown.pop(engine_id)[1])
        for engine_id in chosen:
            record = records[engine_id]
            shown = self._shown.get(engine_id)
            if shown is not None and shown[0] is record:
                continue
            keys = set()
            for name, labels, value in points(record):
                self.gauges[name].labels(engine_id, *labels).set(value)
                keys.add((name, labels))
            if shown is not None:
                self._remove(engine_id, shown[1] - keys)
            self._shown[engine_id] = (record, keys)

    def _remove(self, engine_id: str, keys: set[tuple[str, tuple[str, ...]]]) -> None:
        for name, labels in keys:
            self.gauges[name].remove(engine_id, *labels)


def points(record: dict[str, Any]) -> Iterator[Point]:
    """The series values of one aggregated_stats record."""
    yield "window_end", (), record["window_end"] / 1000
    yield "window_seconds", (), (record["window_end"] - record["window_start"]) / 1000
    yield "executions", (), record["count"]
    if record["count"]:
        yield "success_rate", (), record["success_rate"]
        for quantile, field in QUANTILES:
            yield "latency_ms", (quantile,), record["latency_ms"][field]
    ttfc = record.get("time_to_first_chunk_ms")
    if ttfc:
        for quantile, field in QUANTILES:
            yield "ttfc_ms", (quantile,), ttfc[field]
    for kind, total in record.get("tokens", {}).items():
        if kind != "count":
            yield "tokens", (kind,), total
    cost = record.get("cost")
    if cost is not None:
        if "total" in cost:
            yield "cost", (cost["currency"],), cost["total"]
        yield "unpriced", (), cost["unpriced"]
    if record["quality"]["mean"] is not None:
        yield "quality", (), record["quality"]["mean"]
    comparisons = record["comparisons"]
    yield "comparisons", (), comparisons["count"]
    if comparisons["count"]:
        yield "win_rate", (), comparisons["win_rate"]
