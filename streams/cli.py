"""`json-engine`, the one console script. Thin: parse, load config, call the module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from streams import aggregate_cli, leaderboard_cli, local_kafka
from streams.config import CHANNELS, EVENT_TYPES, ConfigError, JsonEngineConfig, load_config
from streams.model_cli import models_app

app = typer.Typer(
    help="json-engine: validate, sink and aggregate the events of AI engines on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
kafka_app = typer.Typer(
    help="A real local Apache Kafka (KRaft) on 127.0.0.1.", no_args_is_help=True
)
topics_app = typer.Typer(help="The pipeline's topics.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(models_app, name="models")
app.command("aggregate")(aggregate_cli.aggregate)
app.command("report")(aggregate_cli.report)
app.command("leaderboard")(leaderboard_cli.leaderboard)

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (else $JSON_ENGINE_CONFIG, else defaults)."
    ),
]
PortOption = Annotated[int, typer.Option("--port", help="Client port of the first node.")]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Broker data, logs, PID (default ~/.local/state/json-engine/kafka-PORT)."
    ),
]
NodesOption = Annotated[int, typer.Option("--nodes", min=1, max=3, help="1, or 3 for a quorum.")]


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


@kafka_app.command("up")
def kafka_up(
    port: PortOption = 9092,
    data_dir: DataDirOption = None,
    nodes: NodesOption = 1,
    sasl_port: Annotated[
        int | None,
        typer.Option(
            "--sasl-port",
            min=1,
            max=65535,
            help="Also a SASL_SSL (SCRAM-SHA-256) listener on this port; its client settings "
            "go to DATA_DIR/security.json.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Provision (once, cached) and start Kafka; print the bootstrap address."""
    try:
        cluster = local_kafka.up(port, data_dir, nodes, sasl_port)
    except local_kafka.LocalKafkaError as exc:
        raise fail(str(exc)) from None
    out.print(cluster.bootstrap, highlight=False)
    if cluster.sasl_bootstrap is not None:
        err.print(
            f"SASL_SSL ({local_kafka.SASL_MECHANISM}, user {local_kafka.SASL_USERNAME}) on "
            f"{cluster.sasl_bootstrap}; CA certificate {cluster.sasl_dir / 'ca.pem'}; client "
            f"settings (a config for --config) in {cluster.security_file}",
            highlight=False,
            markup=False,
        )


@kafka_app.command("down")
def kafka_down(
    port: PortOption = 9092,
    data_dir: DataDirOption = None,
    nodes: NodesOption = 1,
    config: ConfigOption = None,
) -> None:
    """Stop the broker started from this data directory, by its PID; wait for it to exit."""
    cluster = local_kafka.Cluster(
        port, (data_dir or local_kafka.default_data_dir(port)).resolve(), nodes
    )
    stopped = local_kafka.down(cluster)
    out.print(f"stopped PID {', '.join(map(str, stopped))}" if stopped else "nothing to stop")


@kafka_app.command("status")
def kafka_status(
    port: PortOption = 9092,
    data_dir: DataDirOption = None,
    nodes: NodesOption = 1,
    config: ConfigOption = None,
) -> None:
    """Say whether Kafka answers, and where. Exit 1 when it does not."""
    ok, message = local_kafka.status(port, data_dir, nodes)
    out.print(message, highlight=False)
    if not ok:
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(config: ConfigOption = None) -> None:
    """Create the pipeline's topics (prefix, partitions, replication from config); idempotent."""
    from streams.topics import create_topics, input_topics, internal_topics, pipeline_topics

    cfg = config_or_exit(config)
    try:
        created = set(create_topics(cfg))
    except Exception as exc:
        raise fail(f"cannot create topics on {cfg.kafka.bootstrap_servers}: {exc}") from None
    for name in [*pipeline_topics(cfg).values(), *internal_topics(cfg), *input_topics(cfg)]:
        out.print(f"{'created' if name in created else 'exists '}  {name}", highlight=False)


@topics_app.command("list")
def topics_list(config: ConfigOption = None) -> None:
    """Show the topics that start with the configured prefix."""
    from streams.topics import list_topics

    cfg = config_or_exit(config)
    try:
        topics = list_topics(cfg)
    except Exception as exc:
        raise fail(f"cannot list topics on {cfg.kafka.bootstrap_servers}: {exc}") from None
    for t in topics:
        out.print(
            f"{t.name}\tpartitions={t.partitions}\treplication={t.replication}", highlight=False
        )


@app.command()
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


EventType = Annotated[
    str,
    typer.Option("--type", "-t", help="engine_execution, comparison_result or training_sample."),
]
Files = Annotated[list[Path], typer.Argument(help="JSONL files; `-` reads standard input.")]


def _check_type(kind: str) -> None:
    if kind not in EVENT_TYPES:
        raise fail(f"--type must be one of {', '.join(EVENT_TYPES)}, not {kind!r}", 2)


def _lines(files: list[Path]) -> Iterator[tuple[str, int, bytes]]:
    """(file name, line number, line) of every non-blank line; `-` is standard input."""
    for path in files:
        name = "<stdin>" if str(path) == "-" else str(path)
        try:
            stream = sys.stdin.buffer if name == "<stdin>" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise fail(f"cannot read {path}: {exc.strerror}") from None
        with stream:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    yield name, number, line.rstrip(b"\r\n")


@app.command()
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


@app.command()
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


@app.command()
def cat(
    channel: Annotated[str, typer.Argument(help="A channel key of the configuration.")],
    config: ConfigOption = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Instead of output.base_path.")
    ] = None,
    since: aggregate_cli.SinceOption = None,
    until: aggregate_cli.UntilOption = None,
) -> None:
    """Print every finished line of a channel, in (partition, offset) order."""
    from sinks.reader import channel_dir, iter_lines

    cfg = config_or_exit(config)
    if channel not in CHANNELS:
        raise fail(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}", 2)
    bounds = aggregate_cli.time_bounds(since, until)
    directory = channel_dir(output_dir or cfg.output.base_path, cfg.channels.get(channel).filename)
    stdout = sys.stdout.buffer
    for line in iter_lines(directory, *bounds):
        stdout.write(line + b"\n")
    stdout.flush()


@app.command()
def export(
    output_dir: Annotated[Path, typer.Argument(help="A pipeline's output.base_path.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="sft, dpo or chat.")],
    min_tier: Annotated[str, typer.Option("--min-tier", help="gold, silver or bronze.")] = "bronze",
    out_file: Annotated[Path | None, typer.Option("--out", help="Else standard output.")] = None,
    config: ConfigOption = None,
    since: aggregate_cli.SinceOption = None,
    until: aggregate_cli.UntilOption = None,
) -> None:
    """Export training data as JSONL for fine-tuning (TRL / OpenAI formats)."""
    from sinks.offline.export import TIERS, export_rows, write_jsonl

    if fmt not in ("sft", "dpo", "chat"):
        raise fail(f"--format must be sft, dpo or chat, not {fmt!r}", 2)
    if min_tier not in TIERS:
        raise fail(f"--min-tier must be one of {', '.join(TIERS)}, not {min_tier!r}", 2)
    cfg = config_or_exit(config)
    bounds = aggregate_cli.time_bounds(since, until)
    rows = export_rows(cfg, output_dir, fmt, min_tier, *bounds)  # type: ignore[arg-type]
    if out_file is None:
        count = write_jsonl(rows, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        with open(out_file, "wb") as f:
            count = write_jsonl(rows, f)
    err.print(f"{count} {fmt} rows", highlight=False)


@app.command()
def demo(
    port: PortOption = 9092,
    count: Annotated[int, typer.Option("--events", min=1, help="Engine executions.")] = 2000,
    output_dir: Annotated[Path, typer.Option("--output-dir")] = Path("output"),
    config: ConfigOption = None,
) -> None:
    """The whole pipeline on a local broker (started if needed) with generated events."""
    from streams.demo import run_demo

    try:
        code = run_demo(port, count, output_dir, out)
    except local_kafka.LocalKafkaError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
