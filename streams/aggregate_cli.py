"""`json-engine aggregate` and `json-engine report`: the batch twin and the HTML report.

Plain functions with typer annotations; `streams.cli` registers them on the main app
(`app.command("aggregate")(aggregate)`). They import `streams.cli` inside their bodies only,
because `streams.cli` imports this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from sinks.aggregate_batch import (
    aggregate_frames,
    channel_dirs,
    load_comparisons,
    load_executions,
    untimed_comparisons,
    window_ms,
)
from sinks.atomic import atomic_write
from sinks.files.buckets import parse_time
from sinks.reader import channel_dir, read_records
from sinks.report import render_html
from sinks.s3.location import is_s3
from streams.config import JsonEngineConfig

WindowOption = Annotated[
    float | None,
    typer.Option(
        "--window-minutes",
        help="Window length in minutes, fractions allowed (default: aggregation.window_minutes).",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (else $JSON_ENGINE_CONFIG, else defaults)."
    ),
]


def existing_output(value: Path) -> Path:
    """A directory that exists, or an `s3://bucket/prefix` (checked when it is read)."""
    if not is_s3(value) and not value.is_dir():
        raise typer.BadParameter(f"Directory '{value}' does not exist.")
    return value


OutputDir = Annotated[
    Path,
    typer.Argument(
        callback=existing_output,
        help="The output base path (holds events/, comparisons/…), or s3://bucket/prefix.",
    ),
]


def _window(window_minutes: float | None, cfg: JsonEngineConfig) -> float:
    """The window to use; a bad value exits 2 like any other usage error."""
    minutes = cfg.aggregation.window_minutes if window_minutes is None else window_minutes
    try:
        window_ms(minutes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window-minutes") from None
    return minutes


def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


SinceOption = Annotated[
    str | None,
    typer.Option("--since", help="Only records at or after T (epoch ms or ISO-8601)."),
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="Only records before T (epoch ms or ISO-8601).")
]


def time_bounds(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    """--since / --until as epoch ms; a bad value exits 2 naming the option."""
    return _time(since, "--since"), _time(until, "--until")


def recompute(
    output_dir: Path,
    window_minutes: float,
    cfg: JsonEngineConfig,
    since: int | None = None,
    until: int | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Batch-twin records of `output_dir` and a one-line account of what they came from."""
    events_dir, comparisons_dir = channel_dirs(output_dir, cfg)
    executions = load_executions(events_dir, since, until)
    comparisons = load_comparisons(comparisons_dir, since, until)
    grace = cfg.aggregation.grace_seconds
    records = aggregate_frames(executions, comparisons, window_minutes, grace)
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
) -> None:
    """Recompute aggregated_stats records from the files with pandas (backfill, reconciliation).

    Prints one JSON record per line, sorted by (window_start, engine_id); a summary goes to
    stderr. Comparisons without a timestamp are skipped: their Kafka time is not in the files.
    """
    from streams.cli import config_or_exit

    cfg = config_or_exit(config)
    records, note = recompute(
        from_files, _window(window_minutes, cfg), cfg, *time_bounds(since, until)
    )
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
    from streams.cli import config_or_exit, fail

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
    from sinks.offline.leaderboard import load_comparisons as load_battles

    _, comparisons_dir = channel_dirs(output_dir, cfg)
    battles = load_battles(comparisons_dir, *bounds)  # the Bradley-Terry leaderboard's input
    page = render_html(
        records, title or f"json-engine report: {output_dir.name or output_dir}", battles
    )
    atomic_write(html, page.encode("utf-8"))
    typer.echo(f"report: {html} ({note})")
