"""Rating against cost: which engines no other engine beats on both.

A team running many engines chooses on quality and price together. An engine is on the
*frontier* when no other engine has a rating at least as high and a cost per 1,000
executions at most as high, one of them strictly. Engines whose cost is unknown (no price,
or no tokens reported) are neither on it nor off it (`frontier` null); engines without a
rating likewise. Costs, p95 and success rates are the per-engine totals of the aggregated
windows over the same period as the comparisons (sinks/offline/report.py `leaderboard`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

FIELDS = ("cost_per_1000", "currency", "p95_ms", "success_rate", "executions", "frontier")
WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 26, 40


def add_frontier(
    rows: list[dict[str, Any]], totals: Iterable[dict[str, Any]], groups: dict[str, int]
) -> None:
    """Give each leaderboard row (engine_id, rating) the FIELDS of its engine, in place;
    `groups` maps engines to their connected group (ratings compare only within one)."""
    by_engine = {t["engine_id"]: t for t in totals}
    for row in rows:
        t = by_engine.get(row["engine_id"], {})
        row["cost_per_1000"] = t.get("cost_per_1000")
        row["currency"] = t.get("currency")
        row["p95_ms"] = t.get("p95_ms")
        row["success_rate"] = t.get("success_rate")
        row["executions"] = t.get("count", 0)
    known = [r for r in rows if r.get("rating") is not None and r["cost_per_1000"] is not None]
    for row in rows:
        row["frontier"] = None
    for row in known:
        rivals = [
            o
            for o in known
            if o is not row and groups.get(o["engine_id"]) == groups.get(row["engine_id"])
        ]
        row["frontier"] = not any(_beats(other, row) for other in rivals)


def _beats(a: dict[str, Any], b: dict[str, Any]) -> bool:
    at_least = a["rating"] >= b["rating"] and a["cost_per_1000"] <= b["cost_per_1000"]
    strictly = a["rating"] > b["rating"] or a["cost_per_1000"] < b["cost_per_1000"]
    return at_least and strictly


def _or_dash(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def frontier_html(rows: Sequence[dict[str, Any]]) -> str:
    """A scatter of rating (with its 95% interval) against cost per 1,000 executions (log
    scale), the frontier joined and marked, and its table; a note when no engine has both."""
    known = [r for r in rows if r.get("frontier") is not None]
    unknown = [r["engine_id"] for r in rows if r.get("frontier") is None]
    if not known:
        return (
            '<p class="note">No engine has both a rating and a known cost: add a price table '
            "(<code>pricing:</code>) and report token usage to see rating against cost.</p>"
        )
    currency = next((r["currency"] for r in known if r["currency"]), "")
    costs = [r["cost_per_1000"] for r in known]
    lows = [r.get("ci_low") if r.get("ci_low") is not None else r["rating"] for r in known]
    highs = [r.get("ci_high") if r.get("ci_high") is not None else r["rating"] for r in known]
    c_lo, c_hi = min(costs), max(costs)
    x_lo = math.log10(c_lo / 1.5) if c_lo > 0 else -3
    x_hi = math.log10(c_hi * 1.5) if c_hi > 0 else 0
    y_lo, y_hi = min(lows) - 10, max(highs) + 10
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(cost: float) -> float:
        value = math.log10(cost) if cost > 0 else x_lo
        return LEFT + (value - x_lo) / ((x_hi - x_lo) or 1) * plot_w

    def y(rating: float) -> float:
        return TOP + (1 - (rating - y_lo) / ((y_hi - y_lo) or 1)) * plot_h

    parts = [f'<text x="{LEFT}" y="14" font-weight="600">rating against cost</text>']
    steps = (1, 2, 5) if x_hi - x_lo < 2.5 else (1,)  # 1-2-5 ticks on a narrow range
    ticks = [m * 10.0**e for e in range(math.floor(x_lo), math.ceil(x_hi) + 1) for m in steps]
    for tick in ticks:
        gx = x(tick)
        if LEFT <= gx <= LEFT + plot_w:
            parts.append(
                f'<line class="grid" x1="{gx:.1f}" x2="{gx:.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>'
                f'<text x="{gx:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                f"{escape(f'{tick:g}')}</text>"
            )
    step = next(s for s in (5, 10, 20, 25, 50, 100, 200, 500, 1000) if (y_hi - y_lo) / s <= 6)
    for value in range(math.ceil(y_lo / step) * step, math.floor(y_hi) + 1, step):
        gy = y(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{gy:.1f}" y2="{gy:.1f}"/>'
            f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end">{value:.0f}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">cost per 1,000 '
        f"executions ({escape(currency)}, log scale)</text>"
    )
    best = sorted((r for r in known if r["frontier"]), key=lambda r: r["cost_per_1000"])
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{x(r['cost_per_1000']):.1f},{y(r['rating']):.1f}"
        for i, r in enumerate(best)
    )
    if path:
        parts.append(f'<path d="{path}" fill="none" stroke="#2b8a3e" stroke-dasharray="4 3"/>')
    for r, low, high in zip(known, lows, highs, strict=True):
        cx, cy = x(r["cost_per_1000"]), y(r["rating"])
        color = "#2b8a3e" if r["frontier"] else "#868e96"
        title = (
            f"{r['engine_id']}: rating {r['rating']:.1f} [{low:.1f}, {high:.1f}], "
            f"{r['cost_per_1000']:.4g} {r['currency'] or ''} per 1,000"
        )
        parts.append(
            f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" '
            f'stroke="{color}" stroke-width="1.5"/>'
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{5 if r["frontier"] else 3.5}" '
            f'fill="{color}"><title>{escape(title)}</title></circle>'
            f'<text x="{cx + 8:.1f}" y="{cy + 4:.1f}">{escape(r["engine_id"])}'
            f"{' ★' if r['frontier'] else ''}</text>"
        )
    svg = (
        f'<svg role="img" aria-label="rating against cost" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}">{"".join(parts)}</svg>'
    )
    head = (
        "<tr><th>engine</th><th>frontier</th><th>rating</th><th>cost / 1,000</th>"
        "<th>p95 latency ms</th><th>success rate</th><th>executions</th></tr>"
    )
    body = "".join(
        f'<tr><td class="name">{escape(r["engine_id"])}</td>'
        f"<td>{'★ yes' if r['frontier'] else 'no'}</td><td>{r['rating']:.1f}</td>"
        f'<td class="name">{r["cost_per_1000"]:.4g} {escape(r["currency"] or "")}</td>'
        f"<td>{_or_dash(r['p95_ms'], '{:.0f}')}</td>"
        f"<td>{_or_dash(r['success_rate'] and r['success_rate'] * 100, '{:.2f}%')}</td>"
        f"<td>{r['executions']:,}</td></tr>"
        for r in sorted(known, key=lambda r: -r["rating"])
    )
    note = (
        "★: on the frontier, no other engine rates at least as high for at most the cost "
        "(one of them strictly). Bars: 95% rating intervals. Cost per 1,000 of the priced "
        "executions, p95 and success over the same windows as the report."
    )
    if unknown:
        note += " Without a known cost or a rating: " + ", ".join(unknown) + "."
    return (
        f"{svg}\n<table>\n<thead>{head}</thead>\n<tbody>{body}</tbody></table>\n"
        f'<p class="note">{escape(note)}</p>'
    )
