"""`json-engine aggregate`, `report` and `export`: the offline work on the files (sinks/offline/).

Plain functions with typer annotations; `streams.cli.app` registers them on the main app
(`app.command("aggregate")(aggregate)`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from sinks.atomic import atomic_write
from sinks.reader import channel_dir, read_records
from streams.alerts.regression import find_alerts, forget_ms
from streams.cli.common import (
    ConfigOption,
    OutputDir,
    SinceOption,
    UntilOption,
    config_or_exit,
    err,
    existing_output,
    fail,
    time_bounds,
)
from streams.config import ConfigError, JsonEngineConfig, load_price_file
from streams.pricing.table import price_table

WindowOption = Annotated[
    float | None,
    typer.Option(
        "--window-minutes",
        help="Window length in minutes, fractions allowed (default: aggregation.window_minutes).",
    ),
]


def _window(window_minutes: float | None, cfg: JsonEngineConfig) -> float:
    """The window to use; a bad value exits 2 like any other usage error."""
    from sinks.offline.aggregate_batch import window_ms  # pandas: loaded by the commands only

    minutes = cfg.aggregation.window_minutes if window_minutes is None else window_minutes
    try:
        window_ms(minutes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window-minutes") from None
    return minutes


def recompute(
    output_dir: Path,
    window_minutes: float,
    cfg: JsonEngineConfig,
    since: int | None = None,
    until: int | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Batch-twin records of `output_dir` and a one-line account of what they came from;
    priced by the configuration's price table when it has one."""
    from sinks.offline.aggregate_batch import (
        aggregate_frames,
        channel_dirs,
        load_comparisons,
        load_executions,
        untimed_comparisons,
    )

    events_dir, comparisons_dir = channel_dirs(output_dir, cfg)
    executions = load_executions(events_dir, since, until)
    comparisons = load_comparisons(comparisons_dir, since, until)
    grace = cfg.aggregation.grace_seconds
    prices = price_table(cfg.pricing)
    records = aggregate_frames(executions, comparisons, window_minutes, grace, prices)
    note = (
        f"{len(records)} records from {len(executions)} executions and "
        f"{len(comparisons)} comparisons (windows of {window_minutes:g} min)"
    )
    skipped = untimed_comparisons(comparisons)
    if skipped:
        note += f"; {skipped} comparisons without timestamp skipped (Kafka time is not in files)"
    return records, note


def aggregate(
    from_files: Annotated[
        Path,
        typer.Option(
            "--from-files",
            callback=existing_output,
            help="Output base path (or s3://bucket/prefix) whose events/ and comparisons/ "
            "files are aggregated.",
        ),
    ],
    window_minutes: WindowOption = None,
    config: ConfigOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the JSONL here (atomically) instead of stdout."),
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    prices: Annotated[
        Path | None,
        typer.Option(
            "--prices",
            help="A price table file (YAML or JSON: currency, prices) to price the windows "
            "with, instead of the config's pricing: the cost of any past period, recomputed.",
        ),
    ] = None,
    alerts: Annotated[
        bool,
        typer.Option(
            "--alerts",
            help="Print the regression alerts of the recomputed windows instead (the records "
            "the worker emits to the alerts channel, with the config's regression settings).",
        ),
    ] = False,
) -> None:
    """Recompute aggregated_stats records from the files with pandas (backfill, reconciliation).

    Prints one JSON record per line, sorted by (window_start, engine_id); a summary goes to
    stderr. Comparisons without a timestamp are skipped: their Kafka time is not in the files.
    """
    cfg = config_or_exit(config)
    if prices is not None:
        try:
            cfg.pricing = load_price_file(prices)
        except ConfigError as exc:
            raise fail(str(exc), 2) from None
    records, note = recompute(
        from_files, _window(window_minutes, cfg), cfg, *time_bounds(since, until)
    )
    if alerts:
        records = find_alerts(records, cfg.regression, forget_ms(cfg))
        note += f"; {len(records)} alerts"
    data = b"".join(orjson.dumps(r) + b"\n" for r in records)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        atomic_write(out, data)
    typer.echo(f"aggregate: {note}", err=True)


def report(
    output_dir: OutputDir,
    html: Annotated[Path, typer.Option("--html", help="Where to write the HTML page.")],
    window_minutes: WindowOption = None,
    config: ConfigOption = None,
    title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Render a self-contained HTML report: per-engine charts over time and a leaderboard.

    Uses the aggregated_stats files when there are any; otherwise, or when --window-minutes
    is given (a different window than the stream's), recomputes with the batch twin. Exits 1
    without writing when there is nothing to report.
    """
    cfg = config_or_exit(config)
    bounds = time_bounds(since, until)
    records: list[dict[str, Any]] = []
    if window_minutes is None:
        stats_dir = channel_dir(output_dir, cfg.channels.aggregated_stats.filename)
        records = read_records(stats_dir, *bounds)
        note = f"{len(records)} records from {stats_dir}"
    if not records:
        records, note = recompute(output_dir, _window(window_minutes, cfg), cfg, *bounds)
        note = f"recomputed {note}"
    if not records:
        raise fail(f"nothing to report: no aggregated_stats, events or comparisons in {output_dir}")
    from sinks.offline.aggregate_batch import channel_dirs
    from sinks.offline.leaderboard import load_comparisons as load_battles
    from sinks.offline.report import render_html

    _, comparisons_dir = channel_dirs(output_dir, cfg)
    battles = load_battles(comparisons_dir, *bounds)  # the Bradley-Terry leaderboard's input
    page = render_html(
        records, title or f"json-engine report: {output_dir.name or output_dir}", battles
    )
    atomic_write(html, page.encode("utf-8"))
    typer.echo(f"report: {html} ({note})")


def export(
    output_dir: Annotated[Path, typer.Argument(help="A pipeline's output.base_path.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="sft, dpo or chat.")],
    min_tier: Annotated[str, typer.Option("--min-tier", help="gold, silver or bronze.")] = "bronze",
    out_file: Annotated[Path | None, typer.Option("--out", help="Else standard output.")] = None,
    config: ConfigOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Export training data as JSONL for fine-tuning (TRL / OpenAI formats)."""
    from sinks.offline.export import TIERS, export_rows, write_jsonl

    if fmt not in ("sft", "dpo", "chat"):
        raise fail(f"--format must be sft, dpo or chat, not {fmt!r}", 2)
    if min_tier not in TIERS:
        raise fail(f"--min-tier must be one of {', '.join(TIERS)}, not {min_tier!r}", 2)
    cfg = config_or_exit(config)
    bounds = time_bounds(since, until)
    rows = export_rows(cfg, output_dir, fmt, min_tier, *bounds)  # type: ignore[arg-type]
    if out_file is None:
        count = write_jsonl(rows, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        with open(out_file, "wb") as f:
            count = write_jsonl(rows, f)
    err.print(f"{count} {fmt} rows", highlight=False)
