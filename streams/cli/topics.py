"""`json-engine topics create|list`: the pipeline's topics."""

from __future__ import annotations

import typer

from streams.cli.common import ConfigOption, config_or_exit, fail, out

topics_app = typer.Typer(help="The pipeline's topics.", no_args_is_help=True)


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
