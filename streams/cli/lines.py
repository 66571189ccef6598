"""`json-engine validate`, `publish` and `cat`: JSONL lines into the topics, and out of the files.

Plain functions with typer annotations, registered by `streams.cli.app`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.common import (
    ConfigOption,
    SinceOption,
    UntilOption,
    config_or_exit,
    err,
    fail,
    out,
    time_bounds,
)
from streams.config import CHANNELS, EVENT_TYPES

EventType = Annotated[
    str,
    typer.Option("--type", "-t", help="engine_execution, comparison_result or training_sample."),
]
Files = Annotated[list[Path], typer.Argument(help="JSONL files; `-` reads standard input.")]


def _check_type(kind: str) -> None:
    if kind not in EVENT_TYPES:
        raise fail(f"--type must be one of {', '.join(EVENT_TYPES)}, not {kind!r}", 2)


def _lines(files: list[Path]) -> Iterator[tuple[str, int, bytes]]:
    """(file name, line number, line) of every non-blank line; `-` is standard input. A file
    ending `.gz` or `.zst` is decompressed (a channel's compressed files, say)."""
    import zstandard

    from sinks.formats.compression import decompressed, suffix_of

    for path in files:
        name = "<stdin>" if str(path) == "-" else str(path)
        try:
            stream = sys.stdin.buffer if name == "<stdin>" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise fail(f"cannot read {path}: {exc.strerror}") from None
        ending = suffix_of(name)
        number = 0
        try:
            with stream, decompressed(stream, ending) as lines:
                for number, line in enumerate(lines, 1):
                    if line.strip():
                        yield name, number, line.rstrip(b"\r\n")
        except (OSError, EOFError, zstandard.ZstdError) as exc:
            what = f"not whole {ending.lstrip('.')} data" if ending else "read failed"
            raise fail(f"cannot read {path}: {what} after line {number}: {exc}") from None


def validate(kind: EventType, files: Files, config: ConfigOption = None) -> None:
    """Report each invalid line (file:line: reason); exit 1 if there was one."""
    from streams.validation import ValidationError, Validator

    _check_type(kind)
    cfg = config_or_exit(config)
    validator = Validator(cfg.validation.max_payload_bytes)
    valid = invalid = 0
    for name, number, line in _lines(files):
        try:
            validator.validate(kind, line)
            valid += 1
        except ValidationError as exc:
            invalid += 1
            out.print(f"{name}:{number}: {exc}", highlight=False, markup=False)
    err.print(f"{valid} valid, {invalid} invalid")
    if invalid:
        raise typer.Exit(1)


def publish(kind: EventType, files: Files, config: ConfigOption = None) -> None:
    """Publish lines as events (validated first), with a progress bar and a summary."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from streams.publisher import DeliveryError, Publisher
    from streams.validation import ValidationError

    _check_type(kind)
    cfg = config_or_exit(config)
    invalid = 0
    publisher = Publisher(cfg)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"publishing {kind}", total=None)
        for name, number, line in _lines(files):
            try:
                publisher.collect(kind, line)
            except ValidationError as exc:
                invalid += 1
                err.print(f"{name}:{number}: {exc}", highlight=False, markup=False)
            progress.advance(task)
        try:
            publisher.close()
        except DeliveryError as exc:
            err.print(f"error: {exc}", highlight=False, markup=False)
    sent = int(progress.tasks[0].completed) - invalid
    failed = sent - publisher.delivered  # refused or never acknowledged
    out.print(f"published {publisher.delivered}, invalid {invalid}, failed {failed}")
    if invalid or failed:
        raise typer.Exit(1)


def cat(
    channel: Annotated[str, typer.Argument(help="A channel key of the configuration.")],
    config: ConfigOption = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Instead of output.base_path.")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Print every finished line of a channel, in (partition, offset) order."""
    from sinks.reader import channel_dir, iter_lines

    cfg = config_or_exit(config)
    if channel not in CHANNELS:
        raise fail(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}", 2)
    bounds = time_bounds(since, until)
    directory = channel_dir(output_dir or cfg.output.base_path, cfg.channels.get(channel).filename)
    stdout = sys.stdout.buffer
    for line in iter_lines(directory, *bounds):
        stdout.write(line + b"\n")
    stdout.flush()
