"""Per-engine window state: what one (engine_id, window_start) keeps, bounded in size.

Latencies are kept as they are up to `EXACT_LATENCIES` of them (a window of a quiet engine,
the common case when there are thousands of engines: a sketch alone takes ~2.7 KB), then go
into a DDSketch (1% relative accuracy, at most `SKETCH_BINS` bins whatever the number of
events), so p50/p95/p99 are exact, or within 1% of the exact order statistic, while count,
success, min, max and sum stay exact. State serializes to a small JSON-able dict for the
changelog.

The rarer measurements (cache and reasoning token sums, time to first chunk, evaluations)
live in an `Extras` made on first use, so a window of executions without them costs nothing
more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce
from operator import add
from typing import Any

import numpy as np
from ddsketch import LogCollapsingLowestDenseDDSketch

RELATIVE_ACCURACY = 0.01
SKETCH_BINS = 2048
EXACT_LATENCIES = 32


class Sketch(LogCollapsingLowestDenseDDSketch):
    """The DDSketch whose values reach the bins in bulk: an added value is appended to a list,
    and `PENDING` of them at a time (or whatever waits when the sketch is read, merged or
    saved) are keyed with numpy and counted per bin, one store update per distinct bin. The
    library's own add costs ~0.5 µs of Python per value; this costs an append.

    Every value is keyed the same way, so the bins do not depend on when values were flushed:
    a replay gives the same state, and partials merge exactly as before.
    """

    PENDING = 1024

    def __init__(self) -> None:
        super().__init__(relative_accuracy=RELATIVE_ACCURACY, bin_limit=SKETCH_BINS)
        self._pending: list[float] = []

    def add(self, val: float, weight: float = 1.0) -> None:
        if weight != 1.0:
            raise ValueError("Sketch takes values of weight 1 only")
        pending = self._pending
        pending.append(val)
        if len(pending) >= self.PENDING:
            self.flush()

    def add_many(self, values: Sequence[float]) -> None:
        pending = self._pending
        pending += values
        if len(pending) >= self.PENDING:
            self.flush()

    def flush(self) -> None:
        """Put the waiting values into the bins (keys as the library's LogarithmicMapping
        computes them: ceil(log2(v) * multiplier) + offset)."""
        values = self._pending
        if not values:
            return
        self._pending = []
        array = np.asarray(values, dtype=np.float64)
        mapping = self._mapping
        positive = array[array > mapping.min_possible]
        keys = np.ceil(np.log(positive) / _LN2 * mapping._multiplier) + mapping._offset
        found, counts = np.unique(keys, return_counts=True)
        store = self._store
        for key, count in zip(found.tolist(), counts.tolist(), strict=True):
            store.add(int(key), float(count))
        negative = array[array < -mapping.min_possible]
        for value in negative.tolist():  # latencies are never negative; kept for completeness
            self._negative_store.add(mapping.key(-value), 1.0)
        self._zero_count += float(len(values) - len(positive) - len(negative))
        self._count += float(len(values))
        total = self._sum
        for value in values:  # in order, as the library sums them
            total += value
        self._sum = total
        self._min = min(self._min, min(values))
        self._max = max(self._max, max(values))

    def get_quantile_value(self, quantile: float) -> float | None:
        self.flush()
        return super().get_quantile_value(quantile)

    def merge(self, sketch: LogCollapsingLowestDenseDDSketch) -> None:
        self.flush()
        if isinstance(sketch, Sketch):
            sketch.flush()
        super().merge(sketch)


_LN2 = math.log(2)


def new_sketch() -> Sketch:
    return Sketch()


def sketch_of(values: Sequence[float]) -> Sketch:
    sketch = new_sketch()
    sketch.add_many(values)
    sketch.flush()
    return sketch


def add_value(values: Any, value: float) -> Any:
    """Add to an exact list, which becomes a sketch past EXACT_LATENCIES values: the new
    holder of the values."""
    if type(values) is list:
        values.append(value)
        return sketch_of(values) if len(values) > EXACT_LATENCIES else values
    values.add(value)
    return values


def merge_values(mine: Any, theirs: Any) -> Any:
    """Both holders' values in one (bins of DDSketches add up exactly): the new holder."""
    if type(mine) is list and type(theirs) is list and len(mine) + len(theirs) <= EXACT_LATENCIES:
        mine.extend(theirs)
        return mine
    if type(mine) is list:
        mine = sketch_of(mine)
    mine.merge(sketch_of(theirs) if type(theirs) is list else theirs)
    return mine


def values_to_dict(values: Any) -> dict[str, Any]:
    return {"latencies": values} if type(values) is list else {"sketch": sketch_to_dict(values)}


def values_from_dict(data: dict[str, Any]) -> Any:
    return sketch_from_dict(data["sketch"]) if "sketch" in data else list(data["latencies"])


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


MAX_EVALUATION_NAMES = 16
# An execution's rarer measurements: (cache_read_input, cache_write_input, reasoning_output)
# token counts, time to first chunk (ms) and evaluations, each None when not reported.
ExtraObservation = tuple[int | None, int | None, int | None, float | None, list | None]


@dataclass
class Extras:
    """Cache and reasoning token sums, time to first chunk, and evaluations by name."""

    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    ttfc_count: int = 0
    ttfc_sum: float = 0.0
    ttfc: Any = field(default_factory=list)  # exact values, else a DDSketch (as latencies)
    # name → [count, scored, score sum]; the MAX_EVALUATION_NAMES smallest names only, so
    # which names stay depends on the names alone, not on the order they came in
    evaluations: dict[str, list] = field(default_factory=dict)

    def add(self, observed: ExtraObservation) -> None:
        """Raises, before changing anything, on a value that is not a number."""
        cache_read, cache_write, reasoning, ttfc, evaluations = observed
        sums = (
            self.cache_read + (cache_read or 0),
            self.cache_write + (cache_write or 0),
            self.reasoning + (reasoning or 0),
        )
        ttfc_sum = self.ttfc_sum if ttfc is None else self.ttfc_sum + ttfc
        scores = []
        for evaluation in evaluations or ():
            name, score = evaluation["name"], evaluation.get("score")
            if type(name) is not str:
                raise TypeError(f"evaluation name {name!r} is not a string")
            scores.append((name, score is not None, 0.0 + (score or 0.0)))
        self.cache_read, self.cache_write, self.reasoning = sums
        if ttfc is not None:
            self.ttfc_count += 1
            self.ttfc_sum = ttfc_sum
            self.ttfc = add_value(self.ttfc, ttfc)
        for name, scored, total in scores:
            self._evaluated(name, 1, scored, total)

    def _evaluated(self, name: str, count: int, scored: int, total: float) -> None:
        found = self.evaluations.get(name)
        if found is None:
            evaluations = self.evaluations
            if len(evaluations) >= MAX_EVALUATION_NAMES:
                largest = max(evaluations)
                if name > largest:
                    return
                del evaluations[largest]
            found = evaluations[name] = [0, 0, 0.0]
        found[0] += count
        found[1] += scored
        found[2] += total

    def merge(self, other: Extras) -> None:
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write
        self.reasoning += other.reasoning
        self.ttfc_count += other.ttfc_count
        self.ttfc_sum += other.ttfc_sum
        self.ttfc = merge_values(self.ttfc, other.ttfc)
        for name, (count, scored, total) in other.evaluations.items():
            self._evaluated(name, count, scored, total)

    def fields(self, tokens: dict[str, Any]) -> dict[str, Any]:
        """The aggregated_stats fields these make (and the token sums, into `tokens`)."""
        for name, total in (
            ("cache_read_input", self.cache_read),
            ("cache_write_input", self.cache_write),
            ("reasoning_output", self.reasoning),
        ):
            if total:
                tokens[name] = int64(total)
        found: dict[str, Any] = {}
        if self.ttfc_count:
            found["time_to_first_chunk_ms"] = {
                "count": self.ttfc_count,
                "avg": self.ttfc_sum / self.ttfc_count,
                **{name: quantile(self.ttfc, q) for name, q in QUANTILES},
            }
        if self.evaluations:
            found["evaluations"] = {
                name: {"count": count, "scored": scored, "mean": total / scored if scored else None}
                for name, (count, scored, total) in sorted(self.evaluations.items())
            }
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": [int64(self.cache_read), int64(self.cache_write), int64(self.reasoning)],
            "ttfc": [self.ttfc_count, self.ttfc_sum, values_to_dict(self.ttfc)],
            "evaluations": self.evaluations,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Extras:
        cache_read, cache_write, reasoning = data["tokens"]
        ttfc_count, ttfc_sum, ttfc = data["ttfc"]
        return cls(
            cache_read=cache_read,
            cache_write=cache_write,
            reasoning=reasoning,
            ttfc_count=ttfc_count,
            ttfc_sum=ttfc_sum,
            ttfc=values_from_dict(ttfc),
            evaluations={name: list(v) for name, v in data["evaluations"].items()},
        )


QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


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
    extras: Extras | None = None

    def add_execution(
        self,
        latency_ms: float,
        success: bool,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        extra: ExtraObservation | None = None,
    ) -> None:
        """One execution. Raises, before changing anything, on a value that is not a number:
        the record fails alone."""
        low = min(self.latency_min, latency_ms)  # on a tie the value held stays, as with <
        high = max(self.latency_max, latency_ms)
        total = self.latency_sum + latency_ms
        successes = self.success_count + success
        reported = input_tokens is not None or output_tokens is not None
        inputs = self.input_tokens + (input_tokens or 0)
        outputs = self.output_tokens + (output_tokens or 0)
        if extra is not None:
            extras = self.extras if self.extras is not None else Extras()
            extras.add(extra)
            self.extras = extras
            reported = reported or any(n is not None for n in extra[:3])
        self.token_count += reported
        self.input_tokens, self.output_tokens = inputs, outputs
        self.count += 1
        self.success_count = successes
        self.latency_min, self.latency_max, self.latency_sum = low, high, total
        latencies = self.latencies
        if type(latencies) is list:
            latencies.append(latency_ms)
            if len(latencies) > EXACT_LATENCIES:
                self.latencies = sketch_of(latencies)
        else:
            latencies.add(latency_ms)

    def add_executions(self, rows: list[tuple[Any, ...]]) -> bool:
        """Add many executions' (latency, success, input_tokens, output_tokens), in order (see
        add_columns). False, and nothing changed, when a row carries the rarer measurements
        (add those one by one)."""
        if len(set(map(len, rows))) != 1 or len(rows[0]) != 4:
            return False
        self.add_columns(
            [row[0] for row in rows],
            [row[1] for row in rows],
            [row[2] for row in rows],
            [row[3] for row in rows],
        )
        return True

    def add_columns(
        self,
        latencies: Sequence[Any],
        successes: Sequence[Any],
        inputs: Sequence[Any] | None,
        outputs: Sequence[Any] | None,
    ) -> None:
        """Add executions given as columns, in order: the state adding them one by one gives,
        sums in the same order, in one pass of builtins over each column instead of a call
        per record; `inputs` and `outputs` None when none of them reports tokens. Raises,
        before changing anything, when a value is not a number."""
        total = reduce(add, latencies, self.latency_sum)  # in order, as one by one
        low, high = min(latencies), max(latencies)
        successes_count = sum(successes)
        if inputs is None or outputs is None:
            reported = input_sum = output_sum = 0
        elif None in inputs or None in outputs:
            reported = input_sum = output_sum = 0
            for input_tokens, output_tokens in zip(inputs, outputs, strict=True):
                if input_tokens is not None or output_tokens is not None:
                    reported += 1
                    input_sum += input_tokens or 0
                    output_sum += output_tokens or 0
        else:
            reported, input_sum, output_sum = len(inputs), sum(inputs), sum(outputs)
        self.token_count += reported
        self.input_tokens += input_sum
        self.output_tokens += output_sum
        self.count += len(latencies)
        self.success_count += successes_count
        if low < self.latency_min:
            self.latency_min = low
        if high > self.latency_max:
            self.latency_max = high
        self.latency_sum = total
        held = self.latencies
        if type(held) is list:
            held += latencies
            if len(held) > EXACT_LATENCIES:
                self.latencies = sketch_of(held)
        else:
            held.add_many(latencies)

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
        self.latencies = merge_values(self.latencies, other.latencies)
        self.quality_count += other.quality_count
        self.quality_sum += other.quality_sum
        self.comparisons += other.comparisons
        self.wins += other.wins
        self.token_count += other.token_count
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        if other.extras is not None:
            if self.extras is None:
                self.extras = Extras()
            self.extras.merge(other.extras)

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
                **{name: quantile(latencies, q) if has_latency else 0 for name, q in QUANTILES},
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
        if self.extras is not None:
            record.update(self.extras.fields(record.get("tokens", {})))
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
        data.update(values_to_dict(self.latencies))
        if self.token_count:
            data["tokens"] = [int64(self.input_tokens), int64(self.output_tokens), self.token_count]
        if self.extras is not None:
            data["extras"] = self.extras.to_dict()
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
            latencies=values_from_dict(data),
            quality_count=data["quality_count"],
            quality_sum=data["quality_sum"],
            comparisons=data["comparisons"],
            wins=data["wins"],
            token_count=token_count,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            extras=Extras.from_dict(data["extras"]) if "extras" in data else None,
        )


def sketch_to_dict(sketch: Sketch) -> dict[str, Any]:
    """Only non-empty bins of the positive store (latencies are never negative)."""
    sketch.flush()
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


def sketch_from_dict(data: dict[str, Any]) -> Sketch:
    sketch = new_sketch()
    for key, count in data["bins"].items():
        sketch._store.add(int(key), count)
    sketch._zero_count = data["zero"]
    sketch._count = data["count"]
    sketch._sum = data["sum"]
    if data["min"] is not None:
        sketch._min, sketch._max = data["min"], data["max"]
    return sketch
