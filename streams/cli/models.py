"""`json-engine models ...`: save, list and remove model artifacts in the configured store.

Thin on purpose: each command loads the config and calls `sinks.models`. A store or I/O
error exits 1 with one unwrapped line; a bad config exits 2 (from `config_or_exit`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from sinks.models import ModelInfo, ModelStore, ModelStoreError
from streams.cli.common import ConfigOption, config_or_exit

models_app = typer.Typer(
    help="Versioned model artifacts: atomic, size-limited, checksummed.", no_args_is_help=True
)


def _store(config: Path | None) -> ModelStore:
    return ModelStore.from_config(config_or_exit(config))


def _fail(message: str) -> typer.Exit:
    """One line on stderr, never wrapped to the terminal width (scripts grep it), exit 1."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _line(info: ModelInfo) -> str:
    saved = datetime.fromtimestamp(info["saved_at"] / 1000, UTC).isoformat(timespec="seconds")
    return "\t".join(
        (info["name"], info["version"], str(info["size"]), info["sha256"], saved, info["path"])
    )


@models_app.command("save")
def save(
    name: Annotated[str, typer.Argument(help="Model name (A-Z a-z 0-9 . _ -).")],
    file: Annotated[Path, typer.Argument(help="Artifact file; `.onnx` marks an ONNX model.")],
    version: Annotated[
        str | None, typer.Option("--version", help="Version (default: next integer).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Stream FILE into the store as a new version of NAME; print the saved record."""
    store = _store(config)
    fmt = "onnx" if file.suffix.lower() == ".onnx" else None
    try:
        f = file.open("rb")
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror or exc}") from None
    with f:
        try:
            info = store.save(name, f, version=version, format=fmt)
        except (ModelStoreError, OSError) as exc:
            raise _fail(str(exc)) from None
    typer.echo(f"saved {_line(info)}")


@models_app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    config: ConfigOption = None,
) -> None:
    """One line per version: name, version, size, sha256, saved at (UTC), path."""
    store = _store(config)
    try:
        infos = store.list_models(name)
    except (ModelStoreError, OSError) as exc:
        raise _fail(str(exc)) from None
    for info in infos:
        typer.echo(_line(info))


@models_app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to remove.")],
    config: ConfigOption = None,
) -> None:
    """Remove one version of NAME (manifest first, then the file)."""
    store = _store(config)
    try:
        info = store.delete(name, version)
    except (ModelStoreError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"removed {info['name']} version {info['version']}")
