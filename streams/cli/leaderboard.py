"""`json-engine leaderboard`: Bradley-Terry ratings with bootstrap intervals (issue 16).

A plain function with typer annotations, registered by `streams.cli.app`
(`app.command("leaderboard")(leaderboard.leaderboard)`); the fit lives in
`sinks.offline.leaderboard`, imported when the command runs (scikit-learn is slow to import).
"""

from __future__ import annotations

import csv
import sys
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from sinks.reader import channel_dir, read_records
from streams.cli.common import (
    ConfigOption,
    OutputDir,
    SinceOption,
    UntilOption,
    config_or_exit,
    fail,
    time_bounds,
)

if TYPE_CHECKING:
    from sinks.offline.leaderboard import Leaderboard

FORMATS = ("table", "json", "csv")


def leaderboard(
    output_dir: OutputDir,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table (a rich table), json or csv.")
    ] = "table",
    bootstrap: Annotated[
        int,
        typer.Option("--bootstrap", min=0, help="Bootstrap replicates for the 95% intervals."),
    ] = 1000,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the bootstrap (reproducible runs).")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    min_battles: Annotated[
        int,
        typer.Option(
            "--min-battles", min=0, help="Leave engines with fewer battles out of the fit."
        ),
    ] = 1,
    config: ConfigOption = None,
) -> None:
    """Rank engines by Bradley-Terry ratings (Elo scale) of their comparisons.

    Each comparison is one battle between its winner and every other candidate; the ratings
    are the maximum-likelihood fit on the pairwise win counts, with 95% bootstrap intervals;
    rank = 1 + the engines whose interval lies wholly above. json and csv add, from the
    aggregated windows of the same period, each engine's cost per 1,000 executions, p95
    latency, success rate and whether it is on the rating/cost frontier. Notes (left-out
    engines, disconnected groups, bounds) go to stderr; no comparisons is not an error.
    """
    from sinks.offline.frontier import FIELDS as FRONTIER_FIELDS
    from sinks.offline.leaderboard import FIELDS, load_comparisons, rate
    from sinks.offline.report import frontier_rows
    from sinks.offline.report import leaderboard as totals

    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}", 2)
    cfg = config_or_exit(config)
    bounds = time_bounds(since, until)
    directory = channel_dir(output_dir, cfg.channels.comparison_result.filename)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    comparisons = load_comparisons(directory, *bounds)
    board = rate(comparisons, bootstrap, seed, min_battles)
    if not len(comparisons):
        window = _window(*bounds)
        err.print(f"no comparisons in {directory}{window}: nothing to rate", markup=False)
    else:
        for note in board.notes():
            err.print(f"note: {note}", markup=False)

    # cost, p95 and success of the same period, from the aggregated windows (the frontier)
    stats = read_records(channel_dir(output_dir, cfg.channels.aggregated_stats.filename), *bounds)
    rows = frontier_rows(board, totals(stats))
    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
        sys.stdout.buffer.flush()
    elif fmt == "csv":
        fields = [*FIELDS, *FRONTIER_FIELDS]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.flush()
    else:
        out = Console(soft_wrap=False)
        if board.entries:
            out.print(_table(board))
        if board.excluded:
            out.print(_excluded_table(board))


def _window(since: int | None, until: int | None) -> str:
    from sinks.files.buckets import bucket_of

    if since is None and until is None:
        return ""
    parts = []
    if since is not None:
        parts.append(f"since {since} ({bucket_of(since)})")
    if until is not None:
        parts.append(f"until {until} ({bucket_of(until)})")
    return " " + " ".join(parts)


def _table(board: Leaderboard) -> Table:
    grouped = len(board.groups) > 1
    table = Table(
        title="Bradley-Terry ratings (Elo scale, mean 1000)",
        caption=(
            f"{board.comparisons:,} comparisons, {board.battles:,} battles; "
            + (
                f"95% intervals from {board.bootstrap} bootstrap replicates"
                + (f" (seed {board.seed})" if board.seed is not None else "")
                if board.bootstrap
                else "no intervals (--bootstrap 0)"
            )
            + f"; ridge {board.ridge:g}"
        ),
    )
    if grouped:
        table.add_column("group", justify="right")
    table.add_column("rank", justify="right")
    table.add_column("engine")
    table.add_column("rating", justify="right")
    table.add_column("95% interval", justify="right", no_wrap=True)
    table.add_column("battles", justify="right")
    table.add_column("wins", justify="right")
    table.add_column("win rate", justify="right")
    for e in board.entries:
        interval = (
            f"[{e.ci_low:.1f}, {e.ci_high:.1f}]"
            if e.ci_low is not None and e.ci_high is not None
            else "—"
        )
        cells = [
            str(e.rank),
            e.engine_id,
            f"{e.rating:.1f}",
            interval,
            f"{e.battles:,}",
            f"{e.wins:,}",
            f"{e.win_rate * 100:.1f}%" if e.win_rate is not None else "—",
        ]
        table.add_row(*([str(e.group + 1)] if grouped else []), *cells)
    return table


def _excluded_table(board: Leaderboard) -> Table:
    table = Table(title="Left out of the fit")
    table.add_column("engine")
    table.add_column("battles", justify="right")
    table.add_column("wins", justify="right")
    table.add_column("why")
    for e in board.excluded:
        table.add_row(e.engine_id, f"{e.battles:,}", f"{e.wins:,}", e.reason)
    return table
