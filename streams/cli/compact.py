"""`json-engine compact`: closed hour buckets become Parquet (sinks/compaction/compact.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from sinks.files.buckets import HOUR_MS
from sinks.reader import channel_dir
from streams.cli.common import ConfigOption, OutputDir, config_or_exit, fail, out, time_bounds
from streams.config import CHANNELS


def compact(
    output_dir: OutputDir,
    config: ConfigOption = None,
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", help="Only this channel (repeatable); default: every one."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Buckets whose hour ended by T (epoch ms or ISO-8601) are closed, and only "
            "those: records of them that still come land in new JSONL files, still read.",
        ),
    ] = None,
    grace_hours: Annotated[
        float | None,
        typer.Option(
            "--grace-hours",
            help="A bucket is closed once its hour ended this long before the newest bucket "
            "of its partition (default output.compaction.grace_hours).",
        ),
    ] = None,
    delete_jsonl: Annotated[
        bool | None,
        typer.Option(
            "--delete-jsonl/--keep-jsonl",
            help="Remove the JSONL files a Parquet file replaced (default "
            "output.compaction.delete_jsonl).",
        ),
    ] = None,
) -> None:
    """Write one Parquet file per closed hour bucket and partition of each channel."""
    from sinks.compaction.compact import compact_channel  # pyarrow: for this command only
    from sinks.formats.parquet import load_schema

    cfg = config_or_exit(config)
    settings = cfg.output.compaction
    chosen = channel or list(CHANNELS)
    for name in chosen:
        if name not in CHANNELS:
            raise fail(f"unknown channel {name!r}; expected one of {', '.join(CHANNELS)}", 2)
    _since, until_ms = time_bounds(None, until)
    hours = settings.grace_hours if grace_hours is None else grace_hours
    remove = settings.delete_jsonl if delete_jsonl is None else delete_jsonl
    for name in chosen:
        directory = channel_dir(output_dir, cfg.channels.get(name).filename)
        done = compact_channel(directory, load_schema(name), int(hours * HOUR_MS), until_ms, remove)
        out.print(
            f"{name}: {done.parquet_files} Parquet files, {done.rows} rows, "
            f"{done.jsonl_removed} JSONL files removed",
            highlight=False,
        )
        for reason in done.skipped:
            out.print(f"{name}: left as JSONL: {reason}", highlight=False)
