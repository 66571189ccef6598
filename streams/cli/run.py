"""`json-engine worker` and `json-engine demo`: the commands that run the pipeline.

Plain functions with typer annotations, registered by `streams.cli.app`; the worker process
is `streams.worker.process`, the demo `streams.demo`, both imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.cli.common import ConfigOption, PortOption, config_or_exit, fail, out


def worker(
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info",
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            envvar="JSON_ENGINE_LOG_FORMAT",
            help="json (one object per line) or text.",
        ),
    ] = "json",
) -> None:
    """Run every enabled agent; workers with the same config share the partitions."""
    from streams.worker.process import run_worker

    if log_format not in ("json", "text"):
        raise fail(f"--log-format must be json or text, not {log_format!r}", 2)
    cfg = config_or_exit(config)
    raise typer.Exit(run_worker(cfg, loglevel, log_format))


def demo(
    port: PortOption = 9092,
    count: Annotated[int, typer.Option("--events", min=1, help="Engine executions.")] = 2000,
    output_dir: Annotated[Path, typer.Option("--output-dir")] = Path("output"),
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="The local broker's data (default ~/.local/state/json-engine/kafka-PORT).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """The whole pipeline on a local broker (started if needed) with generated events."""
    from streams.demo import run_demo

    # A broker that cannot start or does not answer: one error line (streams.cli.app.main).
    raise typer.Exit(run_demo(port, count, output_dir, out, data_dir))
