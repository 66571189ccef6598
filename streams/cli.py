"""`json-engine`, the one console script. Thin: parse, load config, call the module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from streams import local_kafka
from streams.config import ConfigError, JsonEngineConfig, load_config
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

err = Console(stderr=True, soft_wrap=True)
out = Console()

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
    config: ConfigOption = None,
) -> None:
    """Provision (once, cached) and start Kafka; print the bootstrap address."""
    try:
        cluster = local_kafka.up(port, data_dir, nodes)
    except local_kafka.LocalKafkaError as exc:
        raise fail(str(exc)) from None
    out.print(cluster.bootstrap, highlight=False)


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
    from streams.topics import create_topics, pipeline_topics

    cfg = config_or_exit(config)
    try:
        created = set(create_topics(cfg))
    except Exception as exc:
        raise fail(f"cannot create topics on {cfg.kafka.bootstrap_servers}: {exc}") from None
    for name in pipeline_topics(cfg).values():
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
) -> None:
    """Run every enabled agent; workers with the same config share the partitions."""
    from streams.worker import run_worker

    cfg = config_or_exit(config)
    raise typer.Exit(run_worker(cfg, loglevel))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
