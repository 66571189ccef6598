"""`json-engine kafka up|down|status`: a real local Apache Kafka (KRaft) on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.cli.common import ConfigOption, PortOption, err, fail, out
from streams.local import kafka as local_kafka

kafka_app = typer.Typer(
    help="A real local Apache Kafka (KRaft) on 127.0.0.1.", no_args_is_help=True
)
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Broker data, logs, PID (default ~/.local/state/json-engine/kafka-PORT)."
    ),
]
NodesOption = Annotated[int, typer.Option("--nodes", min=1, max=3, help="1, or 3 for a quorum.")]


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
