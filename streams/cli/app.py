"""`json-engine`, the one console script: the root app, where every command is registered.

Thin: a command parses, loads the config and calls the module that does the work. One module
per command group, each importing only `streams.cli.common` of the CLI (so no circle):

    kafka        kafka up|down|status       topics       topics create|list
    run          worker, demo               lines        validate, publish, cat
    offline      aggregate, report, export  leaderboard  leaderboard
    models       models save|list|rm
    compact      compact (closed buckets to Parquet)
"""

from __future__ import annotations

import sys

import typer

from streams.cli.common import fail, user_error
from streams.cli.compact import compact
from streams.cli.kafka import kafka_app
from streams.cli.leaderboard import leaderboard
from streams.cli.lines import cat, publish, validate
from streams.cli.models import models_app
from streams.cli.offline import aggregate, export, report
from streams.cli.run import demo, worker
from streams.cli.topics import topics_app

app = typer.Typer(
    help="json-engine: validate, sink and aggregate the events of AI engines on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(models_app, name="models")
app.command("aggregate")(aggregate)
app.command("report")(report)
app.command("leaderboard")(leaderboard)
app.command("worker")(worker)
app.command("validate")(validate)
app.command("publish")(publish)
app.command("cat")(cat)
app.command("export")(export)
app.command("demo")(demo)
app.command("compact")(compact)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the net under every command: the world's errors in one line
        message = user_error(exc)
        if message is None:
            raise
        raise SystemExit(fail(message).exit_code) from None
