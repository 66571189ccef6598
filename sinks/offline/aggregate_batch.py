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
- Token usage: per window, over the executions whose `metrics` report a token count
  (`input_tokens`, `output_tokens`, `cache_read_input_tokens`, `cache_write_input_tokens`,
  `reasoning_output_tokens`), the exact sums of each (a missing one counts 0) and how many
  reported: `tokens: {input, output, count}`, with `cache_read_input`, `cache_write_input`
  and `reasoning_output` when not 0; left out when none did (as the stream does).
- Time to first chunk: count, mean and the same "lower" order statistics as latency over
  the executions that report `metrics.time_to_first_chunk_ms`, left out when none did.
- Evaluations: per name, how many, how many scored and the mean score; the 16 smallest
  names of a window only (the stream's bound, which depends on the names alone).
- Cost (with a price table): the stream's own function of each record
  (`streams.pricing.table.PriceTable.cost`), so it is the same by construction once the
  token sums are.
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
from streams.aggregates.windows import MAX_EVALUATION_NAMES, QUANTILES
from streams.config import JsonEngineConfig
from streams.pricing.table import PriceTable, price_table

log = logging.getLogger(__name__)

EXECUTION_COLUMNS = (
    "engine_id",
    "timestamp",
    "metrics.latency_ms",
    "metrics.success",
    "partition",
    "metrics.input_tokens",
    "metrics.output_tokens",
    "metrics.cache_read_input_tokens",
    "metrics.cache_write_input_tokens",
    "metrics.reasoning_output_tokens",
    "metrics.time_to_first_chunk_ms",
    "evaluations",
)
# Token sums: (column, the stream's field name); the first two always in `tokens`.
TOKEN_SUMS = (
    ("metrics.input_tokens", "input"),
    ("metrics.output_tokens", "output"),
    ("metrics.cache_read_input_tokens", "cache_read_input"),
    ("metrics.cache_write_input_tokens", "cache_write_input"),
    ("metrics.reasoning_output_tokens", "reasoning_output"),
)
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
                metrics.get("cache_read_input_tokens"),
                metrics.get("cache_write_input_tokens"),
                metrics.get("reasoning_output_tokens"),
                metrics.get("time_to_first_chunk_ms"),
                event.get("evaluations"),
            )

    return _frame(rows(), EXECUTION_COLUMNS)


_NO_WINNER: dict[str, Any] = {"engine_id": None, "score": None}


def load_comparisons(
    directory: str | Path, since: int | None = None, until: int | None = None
) -> pd.DataFrame:
    """One row per finished comparison line; candidates keep only engine_id and score."""

    def rows() -> Iterable[tuple[Any, ...]]:
        for partition, line in iter_partition_lines(directory, since, until):
            event = orjson.loads(line)
            winner = event.get("winner") or _NO_WINNER  # a tie: nobody won (issue 28)
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
        columns = [values[order] for values in tokens]
        reported = ~np.logical_and.reduce([np.isnan(values) for values in columns])
        for (_, name), values in zip(TOKEN_SUMS, columns, strict=True):
            counts = np.where(np.isnan(values), 0, values).astype(np.int64)
            stats[f"tokens_{name}"] = np.add.reduceat(counts, first)
        stats["token_count"] = np.add.reduceat(reported.astype(np.int64), first)
    stats = stats.set_index(_KEYS)
    starts = ts - ts % width  # in the rows' order, as engine
    ttfc = _optional_numbers(executions, "metrics.time_to_first_chunk_ms")
    if ttfc is not None:
        stats = stats.join(_ttfc_stats(engine, starts, ttfc), how="left")
    if "evaluations" in executions.columns:
        evaluations = _evaluations(engine, starts, executions["evaluations"])
        stats["evaluations"] = pd.Series(evaluations, dtype=object)
    return stats


def _optional_numbers(executions: pd.DataFrame, dotted: str) -> np.ndarray | None:
    """An optional numeric column as floats (nan: not reported); None if nothing reports it."""
    try:
        column = _column(executions, dotted)
    except KeyError:
        return None
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    return None if np.isnan(values).all() else values


def _token_columns(executions: pd.DataFrame) -> list[np.ndarray] | None:
    """The token columns of TOKEN_SUMS as floats (nan: not reported); None if the frame has
    none (no execution reports tokens)."""
    found = [_optional_numbers(executions, dotted) for dotted, _ in TOKEN_SUMS]
    if all(values is None for values in found):
        return None
    empty = np.full(len(executions), np.nan)
    return [empty if values is None else values for values in found]


def _ttfc_stats(engine: np.ndarray, start: np.ndarray, ttfc: np.ndarray) -> pd.DataFrame:
    """Time to first chunk per (engine_id, window_start) of the executions reporting it."""
    keep = ~np.isnan(ttfc)
    engine, start, ttfc = engine[keep], start[keep], ttfc[keep]
    codes, engines = pd.factorize(engine)
    order = np.lexsort((ttfc, start, codes))
    codes, start, ttfc = codes[order], start[order], ttfc[order]
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
            "ttfc_count": n,
            "ttfc_sum": pd.Series(ttfc).groupby(group).sum().to_numpy(),
        }
    )
    for name, q in QUANTILES:
        stats[f"ttfc_{name}"] = ttfc[first + np.floor((n - 1) * q).astype(np.int64)]
    return stats.set_index(_KEYS)


def _evaluations(
    engine: np.ndarray, start: np.ndarray, evaluations: pd.Series
) -> dict[tuple[str, int], dict[str, list]]:
    """Per (engine_id, window_start): evaluation name → [count, scored, score sum], for the
    MAX_EVALUATION_NAMES smallest names."""
    found: dict[tuple[str, int], dict[str, list]] = {}
    for key_engine, key_start, items in zip(engine, start, evaluations, strict=True):
        if not isinstance(items, list):
            continue
        names = found.setdefault((key_engine, int(key_start)), {})
        for item in items:
            score = item.get("score")
            counts = names.setdefault(item["name"], [0, 0, 0.0])
            counts[0] += 1
            counts[1] += score is not None
            counts[2] += score or 0.0
    return {
        key: {name: names[name] for name in sorted(names)[:MAX_EVALUATION_NAMES]}
        for key, names in found.items()
    }


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
    if not count:
        return record
    token_count = int(getattr(ex, "token_count", 0))
    if token_count:
        tokens = record["tokens"] = {
            "input": int(ex.tokens_input),
            "output": int(ex.tokens_output),
            "count": token_count,
        }
        for _, name in TOKEN_SUMS[2:]:
            total = int(getattr(ex, f"tokens_{name}"))
            if total:
                tokens[name] = total
    ttfc_count = getattr(ex, "ttfc_count", None)
    if ttfc_count is not None and not pd.isna(ttfc_count):
        record["time_to_first_chunk_ms"] = {
            "count": int(ttfc_count),
            "avg": float(ex.ttfc_sum) / int(ttfc_count),
            **{name: float(getattr(ex, f"ttfc_{name}")) for name, _ in QUANTILES},
        }
    evaluations = getattr(ex, "evaluations", None)
    if isinstance(evaluations, dict):
        record["evaluations"] = {
            name: {"count": c, "scored": scored, "mean": total / scored if scored else None}
            for name, (c, scored, total) in evaluations.items()
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
    prices: PriceTable | None = None,
) -> list[dict[str, Any]]:
    """aggregated_stats records of these events, sorted by (window_start, engine_id); with
    `prices`, each priced as the stream prices it (streams/pricing/table.py).

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
    records = [
        _record(str(key[0]), int(key[1]), width, ex_rows.get(key), cmp_rows.get(key))
        for key in keys
    ]
    if prices is not None:
        for record in records:
            record["cost"] = prices.cost(record)
    return records


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
        price_table(cfg.pricing),
    )


def channel_dirs(output_dir: str | Path, config: JsonEngineConfig) -> tuple[Path, Path]:
    """(events, comparisons) directories under `output_dir` as the configuration names them."""
    channels = config.channels
    return (
        channel_dir(output_dir, channels.engine_execution.filename),
        channel_dir(output_dir, channels.comparison_result.filename),
    )
