"""A self-contained HTML report of aggregated_stats records: per-engine charts and a leaderboard.

Given the comparisons too (`render_html(records, title, comparisons)`), the leaderboard is the
Bradley-Terry one of `sinks.offline.leaderboard` (ratings with interval bars, the same numbers
as `json-engine leaderboard DIR --seed 0`), followed by the pairwise matrix of win fractions
and the ratings over time, one fit per window, with their bands.

The page must open anywhere (a CI artifact, a mail attachment, offline), so it fetches
nothing: the charts are small inline SVG drawn here, the style is inline, there is no script.
Every piece of text from the records goes through `html.escape` (engine ids are free text).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from sinks.offline.frontier import add_frontier, frontier_html

if TYPE_CHECKING:
    from sinks.offline.leaderboard import Comparisons, Leaderboard

WIDTH, HEIGHT = 760, 190
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 26, 34
MAX_MARKERS = 120  # points with hover titles per series; beyond that, lines only
COLORS = {"p50": "#2b8a3e", "p95": "#e67700", "p99": "#c92a2a", "rate": "#1c7ed6"}
VOLUME_COLORS = {"executions": "#74c0fc", "comparisons": "#862e9c"}
ENGINE_COLORS = ("#1c7ed6", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#e67700",
                 "#5c940d")  # fmt: skip
RATING_BOOTSTRAP = 1000  # the leaderboard's replicates (as the CLI's default), seed 0
WINDOW_BOOTSTRAP = 100  # per window of the ratings over time
WINDOW_COMPARISONS = 30  # a window with fewer is not fitted
MATRIX_ENGINES = 30  # the pairwise matrix shows the best this many
DAY_MS = 86_400_000
RATING_WINDOWS = [m * 60_000 for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720)] + [
    d * DAY_MS for d in (1, 2, 7, 14, 30, 91, 365)
]

Point = tuple[int, float]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212529}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;margin:28px 0 6px}
p.meta{color:#495057;margin-top:0}
table{border-collapse:collapse;margin:8px 0 4px}
th,td{padding:4px 10px;border-bottom:1px solid #dee2e6;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
th{background:#f1f3f5} tr:hover td{background:#f8f9fa}
p.note{color:#868e96;font-size:.85em;max-width:60em}
svg{display:block;margin:4px 0;font-size:11px}
svg text{fill:#495057} svg .grid{stroke:#e9ecef} svg .axis{stroke:#adb5bd}
.bar{display:inline-block;position:relative;width:180px;height:12px;background:#f1f3f5;
vertical-align:middle} .bar i{position:absolute;top:3px;height:6px;background:#74c0fc}
.bar b{position:absolute;top:0;width:2px;margin-left:-1px;height:12px;background:#1864ab}
table.matrix td{text-align:center;min-width:3.4em;font-size:.85em;padding:3px 5px}
table.matrix td small{display:block;color:#495057} table.matrix th.row{text-align:left}
table.matrix td.self{background:#e9ecef} td.name,table.matrix th.row{white-space:nowrap}
p.legend span{display:inline-block;margin-right:14px;font-size:.85em}
p.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"""


def _utc(ms: int, fmt: str) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime(fmt)


def _time_format(span_ms: int, width_ms: int) -> str:
    if span_ms > 86_400_000:
        return "%m-%d %H:%M"
    return "%H:%M:%S" if width_ms % 60_000 else "%H:%M"


def _fmt(value: float) -> str:
    """Short, readable numbers for axes and tables (the records keep full precision)."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least `value`: round axis maxima."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-12):
            return step * power
    return 10 * power


class _Axes:
    """Maps (time ms, value) to SVG coordinates of one chart; linear or log10 in y."""

    def __init__(self, x_range: tuple[int, int], y_max: float, y_min: float, log: bool):
        self.x0, self.x1 = x_range
        self.log = log
        self.y_min, self.y_max = y_min, y_max
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = HEIGHT - TOP - BOTTOM

    def x(self, ms: float) -> float:
        span = max(self.x1 - self.x0, 1)
        return LEFT + (ms - self.x0) / span * self.plot_w

    def y(self, value: float) -> float:
        if self.log:
            lo, hi = math.log10(self.y_min), math.log10(self.y_max)
            frac = (math.log10(max(value, self.y_min)) - lo) / (hi - lo)
        else:
            frac = (value - self.y_min) / ((self.y_max - self.y_min) or 1)
        return TOP + (1 - frac) * self.plot_h

    def y_ticks(self) -> list[float]:
        if self.log:
            first = math.floor(math.log10(self.y_min))
            last = math.ceil(math.log10(self.y_max))
            return [10.0**e for e in range(first, last + 1)]
        return [self.y_min + (self.y_max - self.y_min) * i / 4 for i in range(5)]


def _frame(axes: _Axes, x_ticks: Sequence[int], time_fmt: str, label: str, y_fmt: Any) -> str:
    """Grid, axes, tick labels and the chart's title."""
    parts = [f'<text x="{LEFT}" y="14" font-weight="600">{escape(label)}</text>']
    bottom = TOP + axes.plot_h
    for value in axes.y_ticks():
        y = axes.y(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(y_fmt(value))}</text>'
        )
    for ms in x_ticks:
        x = axes.x(ms)
        parts.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
            f"{escape(_utc(ms, time_fmt))}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}"/>'
    )
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}"/>')
    return "".join(parts)


def _legend(entries: Sequence[tuple[str, str]]) -> str:
    parts, x = [], WIDTH - RIGHT
    for name, color in reversed(entries):
        x -= 8 + 7 * len(name)
        parts.append(
            f'<rect x="{x}" y="5" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="14">{escape(name)}</text>'
        )
        x -= 18
    return "".join(parts)


def _segments(points: Sequence[Point], width_ms: int) -> list[list[Point]]:
    """Runs of consecutive windows: a missing window breaks the line rather than bridging it."""
    runs: list[list[Point]] = []
    for point in points:
        if runs and point[0] - runs[-1][-1][0] <= width_ms:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def _line(
    axes: _Axes, points: Sequence[Point], width_ms: int, name: str, color: str, fmt: Any
) -> str:
    half = width_ms / 2  # a window's value is drawn at its middle
    parts = []
    for run in _segments(points, width_ms):
        d = " ".join(
            f"{'M' if i == 0 else 'L'}{axes.x(t + half):.1f},{axes.y(v):.1f}"
            for i, (t, v) in enumerate(run)
        )
        parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.6"/>')
    if len(points) <= MAX_MARKERS:
        time_fmt = "%Y-%m-%d %H:%M:%S UTC"
        for t, v in points:
            parts.append(
                f'<circle cx="{axes.x(t + half):.1f}" cy="{axes.y(v):.1f}" r="2.4" fill="{color}">'
                f"<title>{escape(name)} {escape(fmt(v))} · window {escape(_utc(t, time_fmt))}"
                "</title></circle>"
            )
    return "".join(parts)


def _bars(axes: _Axes, points: Sequence[Point], width_ms: int, color: str) -> str:
    parts = []
    base = axes.y(axes.y_min)
    for t, v in points:
        x0, x1 = axes.x(t), axes.x(t + width_ms)
        w = max(x1 - x0 - 1, 0.8)
        y = axes.y(v)
        parts.append(
            f'<rect x="{x0:.1f}" y="{y:.1f}" width="{w:.1f}" height="{base - y:.1f}" '
            f'fill="{color}"><title>{_fmt(v)} executions · window {escape(_utc(t, "%H:%M:%S"))}'
            "</title></rect>"
        )
    return "".join(parts)


def _svg(label: str, body: str) -> str:
    return (
        f'<svg role="img" aria-label="{escape(label)}" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}">{body}</svg>'
    )


def _x_ticks(x_range: tuple[int, int], width_ms: int, count: int = 6) -> list[int]:
    """About `count` ticks on window boundaries, evenly spread over the range."""
    x0, x1 = x_range
    windows = max((x1 - x0) // width_ms, 1)
    step = max(math.ceil(windows / count), 1)
    return [x0 + i * step * width_ms for i in range(windows // step + 1)]


def _engine_charts(
    engine_id: str, rows: Sequence[dict[str, Any]], x_range: tuple[int, int], width_ms: int
) -> str:
    """Latency percentiles, success rate and volume of one engine over time."""
    ticks = _x_ticks(x_range, width_ms)
    time_fmt = _time_format(x_range[1] - x_range[0], width_ms)
    executed = [r for r in rows if r["count"] > 0]  # comparisons-only windows have no latency

    series = {
        name: [(r["window_start"], float(r["latency_ms"][name])) for r in executed]
        for name in ("p50", "p95", "p99")
    }
    values = [v for points in series.values() for _, v in points]
    positive = [v for v in values if v > 0]
    log = bool(positive) and len(positive) == len(values) and max(values) / min(values) >= 50
    if log:
        lo = 10 ** math.floor(math.log10(min(values)))
        axes = _Axes(x_range, 10 ** math.ceil(math.log10(max(values))), lo, log=True)
    else:
        axes = _Axes(x_range, _nice_ceiling(max(values, default=1.0)), 0.0, log=False)
    scale = " (log scale)" if log else ""
    body = _frame(axes, ticks, time_fmt, f"latency ms{scale}", _fmt)
    body += _legend([(n, COLORS[n]) for n in series])
    for name, points in series.items():
        body += _line(axes, points, width_ms, f"{name} ms", COLORS[name], _fmt)
    charts = [_svg(f"latency of {engine_id}", body)]

    axes = _Axes(x_range, 1.0, 0.0, log=False)
    points = [(r["window_start"], float(r["success_rate"])) for r in executed]
    percent = lambda v: f"{v * 100:.4g}%"  # noqa: E731
    body = _frame(axes, ticks, time_fmt, "success rate", percent)
    body += _line(axes, points, width_ms, "success", COLORS["rate"], percent)
    charts.append(_svg(f"success rate of {engine_id}", body))

    bars = [(r["window_start"], float(r["count"])) for r in executed]
    compared = [(r["window_start"], float(r["comparisons"]["count"])) for r in rows]
    compared = [p for p in compared if p[1] > 0]
    top = max((v for _, v in bars + compared), default=1.0)
    axes = _Axes(x_range, _nice_ceiling(top), 0.0, log=False)
    body = _frame(axes, ticks, time_fmt, "volume per window", _fmt)
    body += _legend(list(VOLUME_COLORS.items()))
    body += _bars(axes, bars, width_ms, VOLUME_COLORS["executions"])
    body += _line(axes, compared, width_ms, "comparisons", VOLUME_COLORS["comparisons"], _fmt)
    charts.append(_svg(f"volume of {engine_id}", body))
    return "\n".join(charts)


def leaderboard(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-engine totals over all windows, best win rate first.

    Counts add up exactly; quality is the observation-weighted mean; p95 latency is the
    execution-weighted mean of the windows' p95 (percentiles of windows cannot be merged
    exactly without the raw latencies); cost (windows priced by `pricing`) sums the priced
    executions' and is per 1,000 of them.
    """
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    currencies: dict[str, str] = {}
    for r in records:
        t = totals[r["engine_id"]]
        t["count"] += r["count"]
        t["success"] += r["success_count"]
        t["p95_weighted"] += r["latency_ms"]["p95"] * r["count"]
        t["comparisons"] += r["comparisons"]["count"]
        t["wins"] += r["comparisons"]["wins"]
        if r["quality"]["count"]:
            t["quality_count"] += r["quality"]["count"]
            t["quality_sum"] += r["quality"]["mean"] * r["quality"]["count"]
        cost = r.get("cost")
        if cost is not None:
            currencies[r["engine_id"]] = cost["currency"]
            t["cost"] += cost.get("total", 0.0)
            t["priced"] += cost["priced"]
    board = []
    for engine_id, t in totals.items():
        board.append(
            {
                "engine_id": engine_id,
                "win_rate": t["wins"] / t["comparisons"] if t["comparisons"] else None,
                "comparisons": int(t["comparisons"]),
                "wins": int(t["wins"]),
                "quality_mean": t["quality_sum"] / t["quality_count"]
                if t["quality_count"]
                else None,
                "p95_ms": t["p95_weighted"] / t["count"] if t["count"] else None,
                "success_rate": t["success"] / t["count"] if t["count"] else None,
                "count": int(t["count"]),
                # Over the priced executions only: the others' cost is unknown.
                "cost": t["cost"] if t["priced"] else None,
                "cost_per_1000": 1000 * t["cost"] / t["priced"] if t["priced"] else None,
                "priced": int(t["priced"]),
                "currency": currencies.get(engine_id),
            }
        )
    minus = lambda v: -v if v is not None else math.inf  # noqa: E731
    board.sort(key=lambda b: (minus(b["win_rate"]), minus(b["quality_mean"]), b["engine_id"]))
    return board


def _cell(value: float | None, fmt: Any) -> str:
    return "<td>—</td>" if value is None else f"<td>{escape(fmt(value))}</td>"


def _leaderboard_html(board: Sequence[dict[str, Any]], anchors: dict[str, str]) -> str:
    priced = any(b.get("currency") for b in board)
    head = (
        "<tr><th>#</th><th>engine</th><th>win rate</th><th>wins / comparisons</th>"
        "<th>mean quality</th><th>p95 latency ms</th><th>success rate</th><th>executions</th>"
        + ("<th>cost</th><th>cost per 1,000 executions</th>" if priced else "")
        + "</tr>"
    )
    rows = []
    for rank, b in enumerate(board, 1):
        rows.append(
            f'<tr class="engine-row"><td>{rank}</td>'
            f'<td><a href="#{anchors[b["engine_id"]]}">{escape(b["engine_id"])}</a></td>'
            + _cell(b["win_rate"], lambda v: f"{v * 100:.1f}%")
            + f"<td>{b['wins']:,} / {b['comparisons']:,}</td>"
            + _cell(b["quality_mean"], lambda v: f"{v:.3f}")
            + _cell(b["p95_ms"], _fmt)
            + _cell(b["success_rate"], lambda v: f"{v * 100:.2f}%")
            + f"<td>{b['count']:,}</td>"
            + (_cost_cells(b) if priced else "")
            + "</tr>"
        )
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _cost_cells(b: dict[str, Any]) -> str:
    currency = b.get("currency") or ""
    unpriced = b["count"] - b["priced"]
    note = f" ({unpriced:,} executions unpriced)" if unpriced and b["cost"] is not None else ""
    return _cell(b["cost"], lambda v: f"{v:,.4f} {currency}{note}") + _cell(
        b["cost_per_1000"], lambda v: f"{v:,.4f} {currency}"
    )


# --- the Bradley-Terry leaderboard, its pairwise matrix and ratings over time --------------


def frontier_rows(ratings: Leaderboard, board: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leaderboard's rows with the frontier's fields from the windows' totals."""
    rows = ratings.rows()
    add_frontier(rows, board, {e.engine_id: e.group for e in ratings.entries})
    return rows


def _ratings(comparisons: Comparisons | None) -> Leaderboard | None:
    """The leaderboard of these comparisons (the CLI's defaults, seed 0), None if none rated."""
    if comparisons is None or not len(comparisons):
        return None
    from sinks.offline.leaderboard import rate

    board = rate(comparisons, RATING_BOOTSTRAP, seed=0)
    return board if board.entries else None


def _interval_bar(low: float, rating: float, high: float, scale: tuple[float, float]) -> str:
    lo, hi = scale
    at = lambda v: (v - lo) / ((hi - lo) or 1) * 100  # noqa: E731
    return (
        f'<span class="bar" title="rating {rating:.1f}, 95% interval {low:.1f} to {high:.1f}">'
        f'<i style="left:{at(low):.2f}%;width:{max(at(high) - at(low), 0.5):.2f}%"></i>'
        f'<b style="left:{at(rating):.2f}%"></b></span>'
    )


def _rated_leaderboard_html(
    board: Sequence[dict[str, Any]], ratings: Leaderboard, anchors: dict[str, str]
) -> str:
    """The leaderboard by Bradley-Terry rating, with interval bars; engines of the records
    without a rating follow, in the win-rate order."""
    head = (
        "<tr><th>#</th><th>engine</th><th>rating</th><th>95% interval</th><th></th>"
        "<th>wins / battles</th><th>win rate</th><th>wins / comparisons</th>"
        "<th>mean quality</th><th>p95 latency ms</th><th>success rate</th>"
        "<th>executions</th></tr>"
    )
    totals = {b["engine_id"]: b for b in board}
    ends = [v for e in ratings.entries for v in (e.ci_low, e.rating, e.ci_high) if v is not None]
    pad = (max(ends) - min(ends)) * 0.03 or 1.0
    scale = (min(ends) - pad, max(ends) + pad)
    grouped = len(ratings.groups) > 1
    rows = []

    def engine_cells(engine_id: str) -> str:
        link = anchors.get(engine_id)
        name = escape(engine_id)
        cell = f'<a href="#{link}">{name}</a>' if link else name
        return f'<td class="name">{cell}</td>'

    def total_cells(engine_id: str) -> str:
        b = totals.get(engine_id)
        if b is None:
            return "<td>—</td>" * 6
        return (
            _cell(b["win_rate"], lambda v: f"{v * 100:.1f}%")
            + f"<td>{b['wins']:,} / {b['comparisons']:,}</td>"
            + _cell(b["quality_mean"], lambda v: f"{v:.3f}")
            + _cell(b["p95_ms"], _fmt)
            + _cell(b["success_rate"], lambda v: f"{v * 100:.2f}%")
            + f"<td>{b['count']:,}</td>"
        )

    for e in ratings.entries:
        rank = f"{e.rank}" + (f" <small>(group {e.group + 1})</small>" if grouped else "")
        if e.ci_low is not None and e.ci_high is not None:
            interval = f'<td class="name">[{e.ci_low:.1f}, {e.ci_high:.1f}]</td>'
            bar = f"<td>{_interval_bar(e.ci_low, e.rating or 0.0, e.ci_high, scale)}</td>"
        else:
            interval, bar = "<td>—</td>", "<td></td>"
        rows.append(
            f'<tr class="engine-row"><td>{rank}</td>{engine_cells(e.engine_id)}'
            f"<td>{e.rating:.1f}</td>{interval}{bar}"
            f"<td>{e.wins:,} / {e.battles:,}</td>{total_cells(e.engine_id)}</tr>"
        )
    rated = {e.engine_id for e in ratings.entries}
    apart = {e.engine_id: e for e in ratings.excluded}
    for b in board:
        if b["engine_id"] in rated:
            continue
        left = apart.get(b["engine_id"])
        why = escape(left.reason) if left else "no comparisons"
        battles = f"{left.wins:,} / {left.battles:,}" if left else "—"
        rows.append(
            f'<tr class="engine-row"><td>—</td>{engine_cells(b["engine_id"])}'
            f"<td>—</td><td>{why}</td><td></td><td>{battles}</td>{total_cells(b['engine_id'])}"
            "</tr>"
        )
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _rating_notes(ratings: Leaderboard) -> str:
    text = (
        f"Rating: Bradley-Terry maximum-likelihood fit of {ratings.battles:,} battles from "
        f"{ratings.comparisons:,} comparisons (the winner beats each other candidate; a tie is "
        "half a win each way), on the "
        "Elo scale (mean 1000; 400 points = 10:1 odds), ridge "
        f"{ratings.ridge:g}. Bars: 95% bootstrap interval over comparisons "
        f"({ratings.bootstrap} replicates, seed 0) with the rating marked. # is 1 + the "
        "number of engines whose interval lies wholly above (tied engines share it); "
        "the same as <code>json-engine leaderboard DIR --seed 0</code>. Win rate, wins / "
        "comparisons and the other columns come from the aggregated windows."
    )
    notes = "".join(f"<br>Note: {escape(n)}" for n in ratings.notes())
    return f'<p class="note">{text}{notes}</p>'


def _categories_html(comparisons: Comparisons) -> str:
    """One table per category (issue 28): the comparisons of that category rated alone, with
    95% sandwich intervals (one fit per category), most comparisons first."""
    from sinks.offline.leaderboard import rate

    names = comparisons.category_names()
    if not names:
        return ""
    parts = ["<h2>Ratings by category</h2>"]
    for name in names:
        board = rate(comparisons.in_category(name), ci="sandwich")
        parts.append(
            f'<h3>{escape(name)}</h3>\n<p class="meta">{board.comparisons:,} comparisons, '
            f"{board.battles:,} battles</p>"
        )
        if not board.entries:
            parts.append('<p class="note">Fewer than two engines to rate.</p>')
            continue
        rows = [
            f"<tr><td>{e.rank}</td><td>{escape(e.engine_id)}</td><td>{e.rating:.1f}</td>"
            f"<td>{_interval(e.ci_low, e.ci_high)}</td><td>{e.battles:,}</td>"
            f"<td>{e.wins:,}</td><td>{e.ties:,}</td></tr>"
            for e in board.entries
        ]
        parts.append(
            '<table class="category"><thead><tr><th>#</th><th>engine</th><th>rating</th>'
            "<th>95% interval</th><th>battles</th><th>wins</th><th>ties</th></tr></thead>\n"
            "<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
        )
        parts.extend(f'<p class="note">Note: {escape(n)}</p>' for n in board.notes())
    return "\n".join(parts)


def _interval(low: float | None, high: float | None) -> str:
    return "—" if low is None or high is None else f"[{low:.1f}, {high:.1f}]"


def _share_color(share: float) -> str:
    """Blue when the row engine wins more, red when it loses more, white at one half."""
    strength = min(abs(share - 0.5) * 2, 1.0) * 0.55
    rgb = "28,126,214" if share >= 0.5 else "224,49,49"
    return f"background:rgba({rgb},{strength:.3f})"


def _pairwise_html(ratings: Leaderboard) -> str:
    """Win fraction of the row engine over the column engine, with their battles."""
    shown = ratings.entries[:MATRIX_ENGINES]
    wins = ratings.pairwise
    head = "".join(f'<th title="{escape(e.engine_id)}">{i}</th>' for i, e in enumerate(shown, 1))
    rows = []
    for i, row in enumerate(shown):
        cells = []
        for j, col in enumerate(shown):
            if i == j:
                cells.append('<td class="self">—</td>')
                continue
            won, lost = float(wins[i, j]), float(wins[j, i])  # a tie is half of each
            met = round(won + lost)
            if not met:
                cells.append(
                    f'<td title="{escape(row.engine_id)} never met {escape(col.engine_id)}">·</td>'
                )
                continue
            share = won / met
            title = f"{row.engine_id} beat {col.engine_id} in {share * 100:.1f}% of {met:,} battles"
            cells.append(
                f'<td style="{_share_color(share)}" title="{escape(title)}">'
                f"{share * 100:.0f}%<small>{met:,}</small></td>"
            )
        rows.append(
            f'<tr><th class="row">{i + 1} {escape(row.engine_id)}</th>{"".join(cells)}</tr>'
        )
    more = len(ratings.entries) - len(shown)
    note = (
        "Row engine over column engine: the share of their battles the row engine won, and "
        "how many battles they had (· never met). Ordered by rating."
        + (f" The best {len(shown)} engines of {len(ratings.entries)} are shown." if more else "")
    )
    return (
        "<h2>Pairwise win fractions</h2>\n"
        f'<table class="matrix">\n<thead><tr><th></th>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + f'\n</tbody></table>\n<p class="note">{note}</p>'
    )


def _rating_window(span_ms: int) -> int:
    """A day per window over two days or more (longer windows beyond a month); else about a
    twelfth of the span, rounded up to a round length."""
    target = max(span_ms / 30, DAY_MS) if span_ms >= 2 * DAY_MS else span_ms / 12
    return next((w for w in RATING_WINDOWS if w >= target), RATING_WINDOWS[-1])


def _window_name(width_ms: int) -> str:
    if width_ms % DAY_MS == 0:
        days = width_ms // DAY_MS
        return "day" if days == 1 else f"{days} days"
    minutes = width_ms // 60_000
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"


def _over_time_html(comparisons: Comparisons, ratings: Leaderboard) -> str:
    """One Bradley-Terry fit per window, each with its bootstrap band, for the best engines."""
    from sinks.offline.leaderboard import ratings_over_time

    timed = comparisons.timestamp[comparisons.timed()]
    heading = "<h2>Ratings over time</h2>\n"
    if not timed.size:
        return heading + '<p class="note">No comparison has a timestamp.</p>'
    span = int(timed.max() - timed.min()) + 1
    width = _rating_window(span)
    series = ratings_over_time(comparisons, width, WINDOW_BOOTSTRAP, 0, WINDOW_COMPARISONS)
    if len(series) < 2:
        return heading + (
            f'<p class="note">Ratings over time need two windows of {_window_name(width)} with '
            f"at least {WINDOW_COMPARISONS} comparisons each; "
            f"{len(series)} {'has' if len(series) == 1 else 'have'} them.</p>"
        )
    shown = [e.engine_id for e in ratings.entries[: len(ENGINE_COLORS)]]
    points: dict[str, list[tuple[int, float, float, float]]] = {e: [] for e in shown}
    for start, board in series:
        for e in board.entries:
            if e.engine_id in points and e.rating is not None:
                low = e.ci_low if e.ci_low is not None else e.rating
                high = e.ci_high if e.ci_high is not None else e.rating
                points[e.engine_id].append((start, e.rating, low, high))
    values = [v for pts in points.values() for p in pts for v in p[1:]]
    x_range = (series[0][0], series[-1][0] + width)
    lo, hi = math.floor(min(values) / 50) * 50, math.ceil(max(values) / 50) * 50
    axes = _Axes(x_range, hi if hi > lo else lo + 50, lo, log=False)
    label = f"rating per {_window_name(width)}, 95% bands"
    body = _frame(axes, _x_ticks(x_range, width), _time_format(span, width), label, _fmt)
    half = width / 2
    for engine, color in zip(shown, ENGINE_COLORS, strict=False):
        pts = points[engine]
        for run in _segments([(t, 0.0) for t, *_ in pts], width):
            members = [p for p in pts if run[0][0] <= p[0] <= run[-1][0]]
            if len(members) > 1:
                upper = [f"{axes.x(t + half):.1f},{axes.y(h):.1f}" for t, _, _, h in members]
                lower = [f"{axes.x(t + half):.1f},{axes.y(lo_):.1f}" for t, _, lo_, _ in members]
                body += (
                    f'<polygon points="{" ".join(upper + lower[::-1])}" fill="{color}" '
                    'fill-opacity="0.14" stroke="none"/>'
                )
            else:
                t, _, low, high = members[0]
                x = axes.x(t + half)
                body += (
                    f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axes.y(low):.1f}" '
                    f'y2="{axes.y(high):.1f}" stroke="{color}" stroke-opacity="0.35" '
                    'stroke-width="5"/>'
                )
        body += _line(axes, [(t, r) for t, r, _, _ in pts], width, engine, color, _fmt)
    legend = "".join(
        f'<span><i style="background:{c}"></i>{escape(e)}</span>'
        for e, c in zip(shown, ENGINE_COLORS, strict=False)
    )
    more = len(ratings.entries) - len(shown)
    note = (
        f"Each window of {_window_name(width)} (UTC) with at least {WINDOW_COMPARISONS} "
        f"comparisons is fitted on its own ({len(series)} windows), with a 95% bootstrap band "
        f"of {WINDOW_BOOTSTRAP} replicates; ratings are centred on 1000 among the engines of "
        "each window, so a level moves when the set of engines does. A gap is a window "
        "without enough comparisons."
        + (f" The best {len(shown)} engines are drawn, {more} more are not." if more else "")
    )
    return (
        heading
        + _svg("ratings over time", body)
        + f'\n<p class="legend">{legend}</p>\n<p class="note">{escape(note)}</p>'
    )


def render_html(
    records: Sequence[dict[str, Any]],
    title: str = "json-engine report",
    comparisons: Comparisons | None = None,
) -> str:
    """The whole page for aggregated_stats records (any order, any engines and windows);
    with `comparisons`, the Bradley-Terry leaderboard, pairwise matrix and ratings over time."""
    records = sorted(records, key=lambda r: (r["window_start"], r["engine_id"]))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if not records:
        parts.append('<p class="meta">No aggregated windows.</p></body></html>')
        return "\n".join(parts)

    by_engine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_engine[r["engine_id"]].append(r)
    width_ms = min(r["window_end"] - r["window_start"] for r in records)
    x_range = (records[0]["window_start"], max(r["window_end"] for r in records))
    board = leaderboard(records)
    anchors = {b["engine_id"]: f"engine-{i}" for i, b in enumerate(board)}
    windows = len({r["window_start"] for r in records})
    span = f"{_utc(x_range[0], '%Y-%m-%d %H:%M:%S')} to {_utc(x_range[1], '%Y-%m-%d %H:%M:%S')} UTC"
    parts.append(
        f'<p class="meta">{len(by_engine)} engines · {windows} windows of '
        f"{_fmt(width_ms / 60_000)} min · {escape(span)} · "
        f"{sum(r['count'] for r in records):,} executions</p>"
    )
    parts.append("<h2>Leaderboard</h2>")
    ratings = _ratings(comparisons)
    if ratings is not None:
        parts.append(_rated_leaderboard_html(board, ratings, anchors))
        parts.append(_rating_notes(ratings))
    else:
        parts.append(_leaderboard_html(board, anchors))
    parts.append(
        '<p class="note">Win rate: wins / comparisons the engine took part in. Mean quality: '
        "mean of its quality observations (own score, else the winner's score when it won). "
        "p95 latency: the windows' p95 weighted by their executions. Charts: times in UTC, "
        "one point per window at its middle; a gap is a window without executions.</p>"
    )
    if ratings is not None and comparisons is not None:
        parts.append("<h2>Rating against cost</h2>")
        parts.append(frontier_html(frontier_rows(ratings, board)))
        parts.append(_pairwise_html(ratings))
        parts.append(_categories_html(comparisons))
        parts.append(_over_time_html(comparisons, ratings))
    for b in board:
        engine_id = b["engine_id"]
        parts.append(f'<section id="{anchors[engine_id]}" class="engine">')
        parts.append(f"<h2>{escape(engine_id)}</h2>")
        parts.append(_engine_charts(engine_id, by_engine[engine_id], x_range, width_ms))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
