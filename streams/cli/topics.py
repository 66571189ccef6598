"""`json-engine topics create|list`: the pipeline's topics.

Brokers that do not answer within the commands' bound end as one `error:` line through
`streams.cli.app.main`."""

from __future__ import annotations

import typer

from streams.cli.common import ConfigOption, config_or_exit, fail, out

topics_app = typer.Typer(help="The pipeline's topics.", no_args_is_help=True)


@topics_app.command("create")
def topics_create(config: ConfigOption = None) -> None:
    """Create the pipeline's topics (prefix, partitions, replication from config); idempotent.
    Exit 2 when one exists with other partitions than the config needs."""
    from streams.topics import TopicsInvalid, all_topics, check_topics, create_topics

    cfg = config_or_exit(config)
    try:
        created = set(create_topics(cfg))
        for name in all_topics(cfg):
            out.print(f"{'created' if name in created else 'exists '}  {name}", highlight=False)
        check_topics(cfg)
    except TopicsInvalid as exc:
        raise fail(f"the topics do not fit the config: {exc}", 2) from None


@topics_app.command("list")
def topics_list(config: ConfigOption = None) -> None:
    """Show the topics that start with the configured prefix."""
    from streams.topics import list_topics

    cfg = config_or_exit(config)
    for t in list_topics(cfg):  # a broker that does not answer: one error line (cli/app.py)
        out.print(
            f"{t.name}\tpartitions={t.partitions}\treplication={t.replication}", highlight=False
        )
