"""`json-engine leaderboard`: Bradley-Terry ratings with intervals (issues 16, 28).

A plain function with typer annotations, registered by `streams.cli.app`
(`app.command("leaderboard")(leaderboard.leaderboard)`); the fit lives in
`sinks.offline.leaderboard`, imported when the command runs (scikit-learn is slow to import).
"""

from __future__ import annotations

import csv
import math
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
    category: Annotated[
        str | None,
        typer.Option("--category", help="Rate only the comparisons of this category."),
    ] = None,
    style_control: Annotated[
        bool,
        typer.Option(
            "--style-control",
            help="Hold length and markdown (headers, lists, bold) fixed: Arena's contextual "
            "Bradley-Terry; prints the style coefficients too.",
        ),
    ] = False,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            metavar="ENGINE=RATING",
            help="Pin one engine's rating (else the mean is 1000); intervals become those of "
            "the difference to it.",
        ),
    ] = None,
    ci: Annotated[
        str,
        typer.Option(
            "--ci",
            help="bootstrap (--bootstrap replicates over comparisons) or sandwich (robust, "
            "one fit).",
        ),
    ] = "bootstrap",
    config: ConfigOption = None,
) -> None:
    """Rank engines by Bradley-Terry ratings (Elo scale) of their comparisons.

    Each comparison is one battle between its winner and every other candidate (a tie: half
    a win each way); the ratings are the maximum-likelihood fit on the pairwise win counts,
    with 95% intervals; rank = 1 + the engines whose interval lies wholly above. json and csv
    add, from the aggregated windows of the same period, each engine's cost per 1,000
    executions, p95 latency, success rate and whether it is on the rating/cost frontier.
    Notes (left-out engines, disconnected groups, bounds, style coefficients) go to stderr;
    no comparisons is not an error (exit 0).
    """
    from sinks.offline.frontier import FIELDS as FRONTIER_FIELDS
    from sinks.offline.leaderboard import CI_METHODS, FIELDS, AnchorError, load_comparisons, rate
    from sinks.offline.report import frontier_rows
    from sinks.offline.report import leaderboard as totals

    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}", 2)
    if ci not in CI_METHODS:
        raise fail(f"--ci must be one of {', '.join(CI_METHODS)}, not {ci!r}", 2)
    pin = _anchor(anchor)
    cfg = config_or_exit(config)
    bounds = time_bounds(since, until)
    directory = channel_dir(output_dir, cfg.channels.comparison_result.filename)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    comparisons = load_comparisons(directory, *bounds, style=style_control)
    present = comparisons.category_names()
    if category is not None:
        comparisons = comparisons.in_category(category)
    if style_control and ci == "bootstrap" and bootstrap and len(comparisons) > 100_000:
        err.print(
            f"note: style control refits the contextual model {bootstrap} times on "
            f"{len(comparisons):,} comparisons (a fraction of a second each); --ci sandwich "
            "is one fit",
            markup=False,
        )
    try:
        board = rate(comparisons, bootstrap, seed, min_battles, ci=ci, anchor=pin,
                     style=style_control)  # fmt: skip
    except AnchorError as exc:
        raise fail(f"--anchor: {exc}", 2) from None
    board.category = category
    if not len(comparisons):
        window = _window(*bounds)
        where = f" of category {category!r}" if category is not None else ""
        known = f" (categories: {', '.join(present)})" if category is not None and present else ""
        err.print(
            f"no comparisons{where} in {directory}{window}{known}: nothing to rate", markup=False
        )
    else:
        for note in board.notes():
            err.print(f"note: {note}", markup=False)
        if board.style:
            err.print(f"note: {_style_note(board)}", markup=False)

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
        if board.style:
            out.print(_style_table(board))
        if board.excluded:
            out.print(_excluded_table(board))


def _anchor(text: str | None) -> tuple[str, float] | None:
    """ENGINE=RATING (the last `=` splits: engine ids may hold one)."""
    if text is None:
        return None
    engine, sep, rating = text.rpartition("=")
    try:
        value = float(rating)
    except ValueError:
        value = math.nan
    if not sep or not engine or not math.isfinite(value):
        raise fail(f"--anchor must be ENGINE=RATING (a finite number), not {text!r}", 2)
    return engine, value


def _style_note(board: Leaderboard) -> str:
    parts = []
    for c in board.style:
        interval = f" [{c.ci_low:.3f}, {c.ci_high:.3f}]" if c.ci_low is not None else ""
        parts.append(f"{c.feature} {c.coefficient:+.3f}{interval}")
    return (
        "style coefficients (log-odds per standard deviation of the normalized difference, "
        f"95% {board.ci} intervals): " + ", ".join(parts)
    )


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
    if board.ci == "sandwich":
        intervals = "95% sandwich (robust) intervals"
    elif board.bootstrap:
        intervals = f"95% intervals from {board.bootstrap} bootstrap replicates" + (
            f" (seed {board.seed})" if board.seed is not None else ""
        )
    else:
        intervals = "no intervals (--bootstrap 0)"
    scale = (
        f"{board.anchor[0]} pinned at {board.anchor[1]:g}"
        if board.anchor is not None
        else "mean 1000"
    )
    title = "Bradley-Terry ratings" + (", style controlled" if board.style else "")
    if board.category is not None:
        title += f", category {board.category}"
    table = Table(
        title=f"{title} (Elo scale, {scale})",
        caption=(
            f"{board.comparisons:,} comparisons, {board.battles:,} battles; {intervals}; "
            f"ridge {board.ridge:g}"
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
    table.add_column("ties", justify="right")
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
            f"{e.ties:,}",
            f"{e.win_rate * 100:.1f}%" if e.win_rate is not None else "—",
        ]
        table.add_row(*([str(e.group + 1)] if grouped else []), *cells)
    return table


def _style_table(board: Leaderboard) -> Table:
    table = Table(
        title="Style coefficients",
        caption="log-odds of winning per standard deviation of the normalized difference "
        "(a - b) / (a + b); positive: more of it wins more often",
    )
    table.add_column("feature")
    table.add_column("coefficient", justify="right")
    table.add_column(f"95% interval ({board.ci})", justify="right", no_wrap=True)
    for c in board.style:
        interval = f"[{c.ci_low:.3f}, {c.ci_high:.3f}]" if c.ci_low is not None else "—"
        table.add_row(c.feature, f"{c.coefficient:+.3f}", interval)
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
