"""What the commands share: the two consoles, the common options, config loading, failing.

Every command module imports its helpers from here; only `streams.cli.app` imports the command
modules, so no module of the CLI imports another that imports it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sinks.files.buckets import parse_time
from sinks.s3.location import is_s3
from streams.config import ConfigError, JsonEngineConfig, load_config

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (else $JSON_ENGINE_CONFIG, else defaults)."
    ),
]
PortOption = Annotated[int, typer.Option("--port", help="Client port of the first node.")]


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


def config_or_exit(path: Path | None) -> JsonEngineConfig:
    """Bad configuration exits 2 with the message naming the key, never a traceback."""
    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"error: {message}", highlight=False, markup=False)
    return typer.Exit(code)


def user_error(exc: BaseException) -> str | None:
    """The one-line message of an error of the world rather than of the code (a broker that
    does not answer, a delivery refused, an object store out of reach), else None: a command
    ends on it with `error: …`, never a traceback."""
    from confluent_kafka import KafkaException

    from sinks.s3.store import ObjectStoreError
    from streams.brokers import BrokerError, describe
    from streams.local.kafka import LocalKafkaError
    from streams.publisher import DeliveryError

    if isinstance(exc, KafkaException):
        return describe(exc)
    if isinstance(exc, (BrokerError, DeliveryError, ObjectStoreError, LocalKafkaError)):
        return str(exc)
    return None


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
