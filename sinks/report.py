"""A self-contained HTML report of aggregated_stats records: per-engine charts and a leaderboard.

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
from typing import Any

WIDTH, HEIGHT = 760, 190
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 26, 34
MAX_MARKERS = 120  # points with hover titles per series; beyond that, lines only
COLORS = {"p50": "#2b8a3e", "p95": "#e67700", "p99": "#c92a2a", "rate": "#1c7ed6"}
VOLUME_COLORS = {"executions": "#74c0fc", "comparisons": "#862e9c"}

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
    exactly without the raw latencies).
    """
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
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
            }
        )
    minus = lambda v: -v if v is not None else math.inf  # noqa: E731
    board.sort(key=lambda b: (minus(b["win_rate"]), minus(b["quality_mean"]), b["engine_id"]))
    return board


def _cell(value: float | None, fmt: Any) -> str:
    return "<td>—</td>" if value is None else f"<td>{escape(fmt(value))}</td>"


def _leaderboard_html(board: Sequence[dict[str, Any]], anchors: dict[str, str]) -> str:
    head = (
        "<tr><th>#</th><th>engine</th><th>win rate</th><th>wins / comparisons</th>"
        "<th>mean quality</th><th>p95 latency ms</th><th>success rate</th><th>executions</th></tr>"
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
            + f"<td>{b['count']:,}</td></tr>"
        )
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def render_html(records: Sequence[dict[str, Any]], title: str = "json-engine report") -> str:
    """The whole page for aggregated_stats records (any order, any engines and windows)."""
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
    parts.append(_leaderboard_html(board, anchors))
    parts.append(
        '<p class="note">Win rate: wins / comparisons the engine took part in. Mean quality: '
        "mean of its quality observations (own score, else the winner's score when it won). "
        "p95 latency: the windows' p95 weighted by their executions. Charts: times in UTC, "
        "one point per window at its middle; a gap is a window without executions.</p>"
    )
    for b in board:
        engine_id = b["engine_id"]
        parts.append(f'<section id="{anchors[engine_id]}" class="engine">')
        parts.append(f"<h2>{escape(engine_id)}</h2>")
        parts.append(_engine_charts(engine_id, by_engine[engine_id], x_range, width_ms))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
