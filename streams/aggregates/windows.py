"""Per-engine window state: what one (engine_id, window_start) keeps, bounded in size.

Latencies are kept as they are up to `EXACT_LATENCIES` of them (a window of a quiet engine,
the common case when there are thousands of engines: a sketch alone takes ~2.7 KB), then go
into a DDSketch (1% relative accuracy, at most `SKETCH_BINS` bins whatever the number of
events), so p50/p95/p99 are exact, or within 1% of the exact order statistic, while count,
success, min, max and sum stay exact. State serializes to a small JSON-able dict for the
changelog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ddsketch import LogCollapsingLowestDenseDDSketch

RELATIVE_ACCURACY = 0.01
SKETCH_BINS = 2048
EXACT_LATENCIES = 32


def new_sketch() -> LogCollapsingLowestDenseDDSketch:
    return LogCollapsingLowestDenseDDSketch(
        relative_accuracy=RELATIVE_ACCURACY, bin_limit=SKETCH_BINS
    )


def sketch_of(values: list[float]) -> LogCollapsingLowestDenseDDSketch:
    sketch = new_sketch()
    for value in values:
        sketch.add(value)
    return sketch


def quantile(latencies: Any, q: float) -> float:
    """The q-quantile of a window's latencies: the lower order statistic of the exact values
    (as numpy's method="lower"), else the sketch's estimate."""
    if type(latencies) is list:
        ordered = sorted(latencies)
        return ordered[int(q * (len(ordered) - 1))]
    return latencies.get_quantile_value(q)


def int64(total: int) -> int | float:
    """A sum as JSON can carry it: past 64 bits (orjson's integers) a float."""
    return total if total < 2**63 else float(total)


def window_start(ts: int, width_ms: int) -> int:
    """Tumbling windows aligned to the epoch."""
    return ts - ts % width_ms


@dataclass
class WindowState:
    count: int = 0
    success_count: int = 0
    latency_min: float = float("inf")
    latency_max: float = float("-inf")
    latency_sum: float = 0.0
    # Up to EXACT_LATENCIES values as a list, past that a DDSketch.
    latencies: Any = field(default_factory=list)
    quality_count: int = 0
    quality_sum: float = 0.0
    comparisons: int = 0
    wins: int = 0
    # Token usage (metrics.input_tokens / output_tokens) of the executions that report it.
    token_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add_execution(
        self,
        latency_ms: float,
        success: bool,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        if input_tokens is not None or output_tokens is not None:
            self.token_count += 1
            self.input_tokens += input_tokens or 0
            self.output_tokens += output_tokens or 0
        self.count += 1
        self.success_count += success
        if latency_ms < self.latency_min:
            self.latency_min = latency_ms
        if latency_ms > self.latency_max:
            self.latency_max = latency_ms
        self.latency_sum += latency_ms
        latencies = self.latencies
        if type(latencies) is list:
            latencies.append(latency_ms)
            if len(latencies) > EXACT_LATENCIES:
                self.latencies = sketch_of(latencies)
        else:
            latencies.add(latency_ms)

    def add_comparisons(self, won: bool, qualities: list[float]) -> None:
        """One comparison of the engine: it counts once (a win if it won), and each of its
        candidates' scores is a quality observation."""
        self.add_comparison(None, won)
        for quality in qualities:
            self.add_comparison(quality, False, counted=False)

    def add_comparison(self, quality: float | None, win: bool, counted: bool = True) -> None:
        """One candidate entry: a quality observation; the comparison counts once per engine."""
        if counted:
            self.comparisons += 1
            self.wins += win
        if quality is not None:
            self.quality_count += 1
            self.quality_sum += quality

    def merge(self, other: WindowState) -> None:
        """Add another partition's partial of the same window: every field merges exactly
        (DDSketch bins add up), so the order partials arrive in does not matter."""
        self.count += other.count
        self.success_count += other.success_count
        self.latency_min = min(self.latency_min, other.latency_min)
        self.latency_max = max(self.latency_max, other.latency_max)
        self.latency_sum += other.latency_sum
        self._merge_latencies(other.latencies)
        self.quality_count += other.quality_count
        self.quality_sum += other.quality_sum
        self.comparisons += other.comparisons
        self.wins += other.wins
        self.token_count += other.token_count
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens

    def _merge_latencies(self, theirs: Any) -> None:
        mine = self.latencies
        both_exact = type(mine) is list and type(theirs) is list
        if both_exact and len(mine) + len(theirs) <= EXACT_LATENCIES:
            mine.extend(theirs)
            return
        if type(mine) is list:
            mine = self.latencies = sketch_of(mine)
        mine.merge(sketch_of(theirs) if type(theirs) is list else theirs)

    def record(self, engine_id: str, start: int, width_ms: int) -> dict[str, Any]:
        """The aggregated_stats record (Contract → Aggregates).

        A window with comparisons but no executions has count 0 and latency fields 0; `tokens`
        is there when an execution of the window reported token usage.
        """
        has_latency = self.count > 0
        latencies = self.latencies
        record = {
            "schema_version": 1,
            "engine_id": engine_id,
            "window_start": start,
            "window_end": start + width_ms,
            "count": self.count,
            "success_count": self.success_count,
            "success_rate": self.success_count / self.count if has_latency else 0.0,
            "latency_ms": {
                "min": self.latency_min if has_latency else 0,
                "max": self.latency_max if has_latency else 0,
                "avg": self.latency_sum / self.count if has_latency else 0,
                "p50": quantile(latencies, 0.5) if has_latency else 0,
                "p95": quantile(latencies, 0.95) if has_latency else 0,
                "p99": quantile(latencies, 0.99) if has_latency else 0,
            },
            "quality": {
                "count": self.quality_count,
                "mean": self.quality_sum / self.quality_count if self.quality_count else None,
            },
            "comparisons": {
                "count": self.comparisons,
                "wins": self.wins,
                "win_rate": self.wins / self.comparisons if self.comparisons else 0.0,
            },
        }
        if self.token_count:
            record["tokens"] = {
                "input": int64(self.input_tokens),
                "output": int64(self.output_tokens),
                "count": self.token_count,
            }
        return record

    def to_dict(self) -> dict[str, Any]:
        data = {
            "count": self.count,
            "success_count": self.success_count,
            "min": self.latency_min if self.count else None,
            "max": self.latency_max if self.count else None,
            "sum": self.latency_sum,
            "quality_count": self.quality_count,
            "quality_sum": self.quality_sum,
            "comparisons": self.comparisons,
            "wins": self.wins,
        }
        if type(self.latencies) is list:
            data["latencies"] = self.latencies
        else:
            data["sketch"] = sketch_to_dict(self.latencies)
        if self.token_count:
            data["tokens"] = [int64(self.input_tokens), int64(self.output_tokens), self.token_count]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowState:
        tokens_in, tokens_out, token_count = data.get("tokens") or (0, 0, 0)
        return cls(
            count=data["count"],
            success_count=data["success_count"],
            latency_min=float("inf") if data["min"] is None else data["min"],
            latency_max=float("-inf") if data["max"] is None else data["max"],
            latency_sum=data["sum"],
            latencies=(
                sketch_from_dict(data["sketch"]) if "sketch" in data else list(data["latencies"])
            ),
            quality_count=data["quality_count"],
            quality_sum=data["quality_sum"],
            comparisons=data["comparisons"],
            wins=data["wins"],
            token_count=token_count,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
        )


def sketch_to_dict(sketch: LogCollapsingLowestDenseDDSketch) -> dict[str, Any]:
    """Only non-empty bins of the positive store (latencies are never negative)."""
    store = sketch._store
    bins = {str(i + store.offset): c for i, c in enumerate(store.bins) if c}
    return {
        "bins": bins,
        "zero": sketch._zero_count,
        "count": sketch._count,
        "sum": sketch._sum,
        "min": sketch._min if sketch._count else None,
        "max": sketch._max if sketch._count else None,
    }


def sketch_from_dict(data: dict[str, Any]) -> LogCollapsingLowestDenseDDSketch:
    sketch = new_sketch()
    for key, count in data["bins"].items():
        sketch._store.add(int(key), count)
    sketch._zero_count = data["zero"]
    sketch._count = data["count"]
    sketch._sum = data["sum"]
    if data["min"] is not None:
        sketch._min, sketch._max = data["min"], data["max"]
    return sketch
