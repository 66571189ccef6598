"""The batch twin of the stream aggregator: aggregated_stats records recomputed with pandas.

It reads the `events` and `comparisons` files and computes, per (engine_id, window_start), the
record of Contract → Aggregates. It serves backfill and reconciliation (`json-engine aggregate
--from-files`), the HTML report, and is the test oracle of the streaming aggregator, so every
field follows the Contract literally and nothing is rounded:

- Tumbling windows of `window_minutes` aligned to the epoch by event time, in integer
  milliseconds: W = round(window_minutes * 60000), window_start = ts - ts % W.
- count / success_count / success_rate and latency min / max / avg are exact (avg and
  quality.mean are float sums divided by counts: equal to the stream's up to summation order,
  compare them with a relative tolerance such as 1e-9). p50 / p95 / p99 are the exact "lower"
  order statistic x[floor(q * (n - 1))] of the sorted latencies (numpy `method="lower"`);
  the stream's DDSketch is within 1% of it.
- A comparison's time is its `timestamp`. When absent the stream uses the Kafka record
  timestamp, which the files do not keep: the batch twin skips such comparisons (logged, and
  counted by `untimed_comparisons`).
- Late events are those the stream leaves out: per Kafka partition, in offset order (the
  files keep both), an event whose window ended `grace` or more before the largest event
  time before it (`late_rows`). Windows closed early by `idle_seconds` are not modelled.
- comparisons.count / wins count comparisons, so an engine listed twice among one comparison's
  candidates counts once; quality has one observation per candidate entry: its own `score`,
  else `winner.score` if it is the winner, else none. quality.mean is null without
  observations; win_rate is 0 without comparisons.
- A window with comparisons but no executions has count 0, success_rate 0 and every latency
  field 0 (the schema requires numbers there).
- Token usage: per window, over the executions whose `metrics` report `input_tokens` or
  `output_tokens`, the exact sums of each (a missing one counts 0) and how many reported:
  `tokens: {input, output, count}`, left out when none did (as the stream does).
- Records are sorted by (window_start, engine_id).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from sinks.reader import channel_dir, iter_partition_lines
from streams.config import JsonEngineConfig

log = logging.getLogger(__name__)

QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
EXECUTION_COLUMNS = (
    "engine_id",
    "timestamp",
    "metrics.latency_ms",
    "metrics.success",
    "partition",
    "metrics.input_tokens",
    "metrics.output_tokens",
)
TOKEN_COLUMNS = ("metrics.input_tokens", "metrics.output_tokens")
COMPARISON_COLUMNS = ("timestamp", "candidates", "winner.engine_id", "winner.score", "partition")
_KEYS = ["engine_id", "window_start"]


def window_ms(window_minutes: float) -> int:
    """Window length in integer milliseconds: fractional minutes allowed, 0 ms not."""
    width = round(float(window_minutes) * 60_000)
    if not width >= 1:
        raise ValueError(f"window_minutes must give at least 1 ms, got {window_minutes!r}")
    return width


# --- loading ------------------------------------------------------------------------------


def _frame(rows: Iterable[tuple[Any, ...]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame.from_records(list(rows), columns=list(columns))


def load_executions(
    directory: str | Path, since: int | None = None, until: int | None = None
) -> pd.DataFrame:
    """The execution fields the aggregates need, one row per finished line.

    Only these fields are kept, parsed line by line, so a million events do not hold their
    inputs and outputs in memory. Columns are those of `sinks.reader.read_dataframe`.
    """

    def rows() -> Iterable[tuple[Any, ...]]:
        for partition, line in iter_partition_lines(directory, since, until):
            event = orjson.loads(line)
            metrics = event["metrics"]
            yield (
                event["engine_id"],
                event["timestamp"],
                metrics["latency_ms"],
                metrics["success"],
                partition,
                metrics.get("input_tokens"),
                metrics.get("output_tokens"),
            )

    return _frame(rows(), EXECUTION_COLUMNS)


def load_comparisons(
    directory: str | Path, since: int | None = None, until: int | None = None
) -> pd.DataFrame:
    """One row per finished comparison line; candidates keep only engine_id and score."""

    def rows() -> Iterable[tuple[Any, ...]]:
        for partition, line in iter_partition_lines(directory, since, until):
            event = orjson.loads(line)
            winner = event["winner"]
            candidates = [
                {"engine_id": c["engine_id"], "score": c.get("score")} for c in event["candidates"]
            ]
            ts = event.get("timestamp")
            yield ts, candidates, winner["engine_id"], winner["score"], partition

    return _frame(rows(), COMPARISON_COLUMNS)


# --- normalizing the accepted input shapes ------------------------------------------------


def _column(frame: pd.DataFrame, dotted: str) -> pd.Series:
    """`metrics.latency_ms` from a flattened frame, or from a nested `metrics` dict column."""
    if dotted in frame.columns:
        return frame[dotted]
    parent, _, child = dotted.partition(".")
    if child and parent in frame.columns:
        return frame[parent].map(lambda d: d.get(child) if isinstance(d, dict) else None)
    raise KeyError(f"input frame has no column {dotted!r} (nor {parent!r} objects)")


def untimed_comparisons(comparisons: pd.DataFrame) -> int:
    """How many comparisons the batch twin skips: no `timestamp` in the file."""
    if comparisons.empty:
        return 0
    if "timestamp" not in comparisons.columns:
        return len(comparisons)
    return int(comparisons["timestamp"].isna().sum())


# --- per-window statistics ----------------------------------------------------------------


def _execution_stats(executions: pd.DataFrame, width: int) -> pd.DataFrame:
    """count, success and latency statistics per (engine_id, window_start), exactly."""
    if executions.empty:
        return pd.DataFrame()
    engine = _column(executions, "engine_id").to_numpy(dtype=object)
    ts = _column(executions, "timestamp").to_numpy(dtype=np.int64)
    latency = _column(executions, "metrics.latency_ms").to_numpy(dtype=np.float64)
    success = _column(executions, "metrics.success").to_numpy() == True  # noqa: E712
    start = ts - ts % width

    codes, engines = pd.factorize(engine)
    # One sort by (engine, window, latency) makes every group a run of sorted latencies, so
    # min, max and any order statistic is a single gather at an offset inside the run.
    order = np.lexsort((latency, start, codes))
    codes, start, latency, success = codes[order], start[order], latency[order], success[order]
    new_group = np.empty(len(order), dtype=bool)
    new_group[0] = True
    new_group[1:] = (codes[1:] != codes[:-1]) | (start[1:] != start[:-1])
    first = np.flatnonzero(new_group)
    n = np.diff(np.append(first, len(order)))
    group = np.cumsum(new_group) - 1

    stats = pd.DataFrame(
        {
            "engine_id": engines[codes[first]],
            "window_start": start[first],
            "count": n,
            "success_count": np.add.reduceat(success.astype(np.int64), first),
            "min": latency[first],
            "max": latency[first + n - 1],
            # pandas sums groups with compensated (Kahan) summation: the closest to exact.
            "sum": pd.Series(latency).groupby(group).sum().to_numpy(),
        }
    )
    for name, q in QUANTILES:
        # The same float expression numpy's method="lower" evaluates.
        stats[name] = latency[first + np.floor((n - 1) * q).astype(np.int64)]
    tokens = _token_columns(executions)
    if tokens is not None:
        tokens_in, tokens_out = (t[order] for t in tokens)
        reported = ~(np.isnan(tokens_in) & np.isnan(tokens_out))
        for name, values in (("input_tokens", tokens_in), ("output_tokens", tokens_out)):
            counts = np.where(np.isnan(values), 0, values).astype(np.int64)
            stats[name] = np.add.reduceat(counts, first)
        stats["token_count"] = np.add.reduceat(reported.astype(np.int64), first)
    return stats.set_index(_KEYS)


def _token_columns(executions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """metrics.input_tokens and output_tokens as floats (nan: not reported); None if the frame
    has neither column (no execution reports tokens)."""
    found = []
    for dotted in TOKEN_COLUMNS:
        try:
            column = _column(executions, dotted)
        except KeyError:
            column = pd.Series(np.nan, index=executions.index)
        found.append(pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64))
    if all(np.isnan(values).all() for values in found):
        return None
    return found[0], found[1]


def _comparison_stats(comparisons: pd.DataFrame, width: int) -> pd.DataFrame:
    """comparisons count / wins and quality observations per (engine_id, window_start)."""
    if comparisons.empty:
        return pd.DataFrame()
    skipped = untimed_comparisons(comparisons)
    if skipped:
        log.warning("skipped %d comparisons without timestamp (Kafka time not in files)", skipped)
        if skipped == len(comparisons):
            return pd.DataFrame()
        comparisons = comparisons[comparisons["timestamp"].notna()]
        if comparisons.empty:
            return pd.DataFrame()
    ts = _column(comparisons, "timestamp").to_numpy().astype(np.int64)
    candidates = _column(comparisons, "candidates").tolist()
    winner = _column(comparisons, "winner.engine_id").to_numpy(dtype=object)
    winner_score = _column(comparisons, "winner.score").to_numpy(dtype=np.float64)

    # One row per candidate entry: the only per-item Python work is reading nested JSON.
    sizes = np.fromiter((len(c) for c in candidates), dtype=np.int64, count=len(candidates))
    flat = list(chain.from_iterable(candidates))
    engine = np.array([c["engine_id"] for c in flat], dtype=object)
    score = np.array([c.get("score") for c in flat], dtype=np.float64)  # None → nan
    comparison = np.repeat(np.arange(len(candidates)), sizes)
    is_winner = engine == winner[comparison]
    quality = np.where(
        np.isnan(score), np.where(is_winner, winner_score[comparison], np.nan), score
    )
    codes, engines = pd.factorize(engine)
    rows = pd.DataFrame(
        {
            "code": codes,
            "window_start": (ts - ts % width)[comparison],
            "comparison": comparison,
            "win": is_winner,
            "quality": quality,
        }
    )

    # An engine listed twice in one comparison is in that comparison once.
    entered = rows.drop_duplicates(["comparison", "code"])
    counted = entered.groupby(["code", "window_start"]).agg(
        comparisons=("win", "size"), wins=("win", "sum")
    )
    observed = (
        rows[rows["quality"].notna()]
        .groupby(["code", "window_start"])
        .agg(quality_count=("quality", "size"), quality_sum=("quality", "sum"))
    )
    stats = counted.join(observed, how="left").reset_index()
    stats["engine_id"] = engines[stats["code"].to_numpy()]
    return stats.drop(columns="code").set_index(_KEYS)


# --- records ------------------------------------------------------------------------------


def _record(engine_id: str, start: int, width: int, ex: Any, cmp: Any) -> dict[str, Any]:
    count = int(ex.count) if ex is not None else 0
    if count:
        success_count = int(ex.success_count)
        latency = {
            "min": float(ex.min),
            "max": float(ex.max),
            "avg": float(ex.sum) / count,
            **{name: float(getattr(ex, name)) for name, _ in QUANTILES},
        }
    else:
        success_count = 0
        latency = dict.fromkeys(("min", "max", "avg", "p50", "p95", "p99"), 0.0)
    compared = int(cmp.comparisons) if cmp is not None else 0
    wins = int(cmp.wins) if cmp is not None else 0
    observed = cmp is not None and not pd.isna(cmp.quality_count)
    quality_count = int(cmp.quality_count) if observed else 0
    record = {
        "schema_version": 1,
        "engine_id": engine_id,
        "window_start": start,
        "window_end": start + width,
        "count": count,
        "success_count": success_count,
        "success_rate": success_count / count if count else 0.0,
        "latency_ms": latency,
        "quality": {
            "count": quality_count,
            "mean": float(cmp.quality_sum) / quality_count if quality_count else None,
        },
        "comparisons": {
            "count": compared,
            "wins": wins,
            "win_rate": wins / compared if compared else 0.0,
        },
    }
    token_count = int(getattr(ex, "token_count", 0)) if count else 0
    if token_count:
        record["tokens"] = {
            "input": int(ex.input_tokens),
            "output": int(ex.output_tokens),
            "count": token_count,
        }
    return record


def late_rows(frame: pd.DataFrame, width: int, grace_ms: int) -> pd.Series:
    """Which rows the stream finds late: per Kafka partition, in offset order (the row order),
    a row whose window ended `grace_ms` or more before the largest timestamp before it.
    A frame without a `partition` column has no order to judge by: nothing is late."""
    if frame.empty or "partition" not in frame.columns or "timestamp" not in frame.columns:
        return pd.Series(False, index=frame.index)
    ts = frame["timestamp"]
    stream_time = ts.groupby(frame["partition"], sort=False).transform(
        lambda t: t.cummax().shift(1)
    )
    start = ts - ts % width
    return (start + width + grace_ms <= stream_time).fillna(False).astype(bool)


def aggregate_frames(
    executions: pd.DataFrame,
    comparisons: pd.DataFrame,
    window_minutes: float,
    grace_seconds: float | None = None,
) -> list[dict[str, Any]]:
    """aggregated_stats records of these events, sorted by (window_start, engine_id).

    Frames have the shape of `sinks.reader.read_dataframe` (dotted columns `engine_id`,
    `timestamp`, `metrics.latency_ms`, `metrics.success`; comparisons `timestamp`,
    `candidates` (list of objects), `winner.engine_id`, `winner.score`) or of
    `load_executions` / `load_comparisons`; nested `metrics` / `winner` object columns work
    too. Either frame may be empty. With `grace_seconds`, rows the stream finds late
    (`late_rows`, frames with a `partition` column in offset order) are left out, as the
    stream leaves them out.
    """
    width = window_ms(window_minutes)
    if grace_seconds is not None:
        grace = round(grace_seconds * 1000)
        executions = executions[~late_rows(executions, width, grace)]
        comparisons = comparisons[~late_rows(comparisons, width, grace)]
    ex = _execution_stats(executions, width)
    cmp = _comparison_stats(comparisons, width)
    ex_rows = {key: row for key, row in zip(ex.index, ex.itertuples(index=False), strict=True)}
    cmp_rows = {key: row for key, row in zip(cmp.index, cmp.itertuples(index=False), strict=True)}
    keys = sorted(ex_rows.keys() | cmp_rows.keys(), key=lambda k: (k[1], k[0]))
    return [
        _record(str(key[0]), int(key[1]), width, ex_rows.get(key), cmp_rows.get(key))
        for key in keys
    ]


def aggregate_dir(
    output_dir: str | Path,
    window_minutes: float | None = None,
    config: JsonEngineConfig | None = None,
    grace_seconds: float | None = None,
    since: int | None = None,
    until: int | None = None,
) -> list[dict[str, Any]]:
    """Recompute the aggregates of an output directory (`<base_path>`) from its files.

    Channel directories come from the configuration's filenames (defaults if none);
    `window_minutes` overrides the configured `aggregation.window_minutes`; with
    `grace_seconds` the events the stream finds late are left out (`late_rows`).
    """
    cfg = config or JsonEngineConfig()
    events, comparisons = channel_dirs(output_dir, cfg)
    minutes = cfg.aggregation.window_minutes if window_minutes is None else window_minutes
    return aggregate_frames(
        load_executions(events, since, until),
        load_comparisons(comparisons, since, until),
        minutes,
        grace_seconds,
    )


def channel_dirs(output_dir: str | Path, config: JsonEngineConfig) -> tuple[Path, Path]:
    """(events, comparisons) directories under `output_dir` as the configuration names them."""
    channels = config.channels
    return (
        channel_dir(output_dir, channels.engine_execution.filename),
        channel_dir(output_dir, channels.comparison_result.filename),
    )
