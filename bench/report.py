"""Summaries, the printed table, the JSON record and the Markdown page of one benchmark run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import aggregation
from bench.measure import Run
from streams import local_kafka

CEILINGS = ("consumer-perf", "confluent-raw")
GOALS = (
    # (contender, reference, minimum ratio of median events/s, text)
    ("json-engine-1w", "confluent-parse", 0.7, "≥ 0.7x the confluent-kafka parse+validate loop"),
    ("json-engine-1w", "quix", 1.0, "≥ Quix Streams"),
    ("json-engine-1w", "kafka-connect", 1.0, "≥ Kafka Connect FileStreamSink"),
    ("json-engine-1w", "faust-naive", 6.0, "≥ 6x the naive Faust agent"),
    ("json-engine-1w-agg", "json-engine-1w", 0.75, "aggregation on ≥ 0.75x sink-only throughput"),
)
STATE_GOAL_BYTES = 64 * 1024
RSS_GOAL_MB = 300.0


def summarize(name: str, label: str, what: str, runs: list[Run]) -> dict[str, Any]:
    """Median, min and max of the successful repetitions; errors kept verbatim."""
    ok = [r for r in runs if r.error is None and r.rate]
    out: dict[str, Any] = {
        "name": name,
        "label": label,
        "what": what,
        "runs": [asdict(r) for r in runs],
        "ok": len(ok),
        "errors": [r.error for r in runs if r.error],
    }
    if ok:
        rates = [r.rate for r in ok if r.rate is not None]
        out.update(
            events_per_s=statistics.median(rates),
            events_per_s_min=min(rates),
            events_per_s_max=max(rates),
            startup_s=_median([r.startup_s for r in ok]),
            cpu_s_per_million=_median([r.cpu_s_per_m for r in ok]),
            peak_rss_mb=max((r.rss_mb for r in ok if r.rss_mb), default=None),
            steady=all(r.steady for r in ok),
        )
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def add_ratios(rows: list[dict[str, Any]]) -> str | None:
    """Ratio of each median to the ceiling: the faster of the two ceiling contenders
    (ConsumerPerformance, the raw confluent-kafka loop) in this run."""
    measured = [r for r in rows if r["name"] in CEILINGS and r.get("events_per_s")]
    if not measured:
        return None
    best = max(measured, key=lambda r: r["events_per_s"])
    ceiling, top = best["label"], best["events_per_s"]
    for row in rows:
        if row.get("events_per_s"):
            row["x_ceiling"] = row["events_per_s"] / top
    return ceiling


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {r["name"]: r for r in rows}
    out = []
    for name, ref, minimum, text in GOALS:
        mine = by_name.get(name, {}).get("events_per_s")
        theirs = by_name.get(ref, {}).get("events_per_s")
        if mine and theirs:
            ratio = mine / theirs
            out.append({"goal": text, "value": f"{ratio:.2f}x", "met": ratio >= minimum})
        else:
            out.append({"goal": text, "value": "not measured", "met": None})
    for name in ("json-engine-1w", "json-engine-2w"):
        rss = by_name.get(name, {}).get("peak_rss_mb")
        if rss:
            out.append(
                {
                    "goal": f"{by_name[name]['label']}: peak RSS per worker ≤ {RSS_GOAL_MB:.0f} MB",
                    "value": f"{rss:.0f} MB",
                    "met": rss <= RSS_GOAL_MB,
                }
            )
    state = aggregation.measure(50_000)[0]["max_state_bytes"]  # bench.aggregation, in-process
    out.append(
        {
            "goal": "aggregation state ≤ 64 KiB per engine-window (bench.aggregation)",
            "value": f"{state / 1024:.1f} KiB",
            "met": state <= STATE_GOAL_BYTES,
        }
    )
    return out


# -- environment --------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(
    extra_versions: dict[str, str | None], load_at_start: tuple[float, float, float]
) -> dict[str, Any]:
    """Date, machine and versions, for the reader to judge what the numbers mean."""
    mem_kb = 0
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import confluent_kafka

    java = subprocess.run(["java", "-version"], capture_output=True, text=True)
    versions = {
        "python": platform.python_version(),
        "json-engine": _version("json-engine"),
        "kafka": local_kafka.KAFKA_VERSION,
        "faust-streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "confluent-kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "orjson": _version("orjson"),
        "fastjsonschema": _version("fastjsonschema"),
        "java": (java.stderr.splitlines() or ["?"])[0] if java.returncode == 0 else None,
        **extra_versions,
    }
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cores": os.cpu_count(),
            "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "cpu": model,
            "load_avg_at_start": load_at_start,
            "load_avg_at_end": os.getloadavg(),
            "platform": platform.platform(),
        },
        "versions": versions,
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
    }


# -- output -------------------------------------------------------------------------------


def _loads(values: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in values)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cells(row: dict[str, Any]) -> list[str]:
    if not row.get("events_per_s"):
        reason = (row["errors"] or ["skipped"])[0].splitlines()[0][:60]
        return [row["label"], "failed", reason, "", "", "", "", f"0/{len(row['runs'])}"]
    return [
        row["label"],
        f"{row['events_per_s']:,.0f}" + ("" if row["steady"] else "*"),
        f"{row['events_per_s_min']:,.0f}-{row['events_per_s_max']:,.0f}",
        _fmt(row.get("x_ceiling"), ".2f"),
        _fmt(row["startup_s"], ".1f"),
        _fmt(row["cpu_s_per_million"], ".1f"),
        _fmt(row["peak_rss_mb"], ".0f"),
        f"{row['ok']}/{len(row['runs'])}",
    ]


HEADER = [
    "contender",
    "events/s",
    "min-max",
    "x ceiling",
    "start-up s",
    "CPU s/M ev",
    "peak RSS MB",
    "runs",
]


def text_table(rows: list[dict[str, Any]]) -> str:
    table = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = []
    for n, line in enumerate(table):
        cells = [c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(line)]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def markdown(record: dict[str, Any]) -> str:
    env, cfg, rows = record["environment"], record["config"], record["contenders"]
    machine, versions = env["machine"], env["versions"]
    out = [
        "# json-engine benchmark",
        "",
        f"{env['date']}, `{env['command']}`; {cfg['events']:,} engine_execution events of "
        f"~{cfg['avg_bytes']:.0f} B, {cfg['partitions']} partitions, 8 engines, seed "
        f"{cfg['seed']}; median of {cfg['repeat']} repetition(s), each from a fresh consumer "
        f"group, one contender at a time, on one broker ({cfg['broker']}). Keyed by engine, "
        f"the events fall into the partitions as {', '.join(map(str, cfg['partition_counts']))}"
        " (a second worker can only take over whole partitions).",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"load average (1, 5, 15 min) {_loads(machine['load_avg_at_start'])} at the start, "
        f"{_loads(machine['load_avg_at_end'])} at the end: the broker and the contender share "
        "the cores with whatever else runs, and a loaded machine makes every figure noisy.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|",
    ]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    ceiling = record.get("ceiling")
    out += [
        "",
        "events/s: steady state, from the first durable batch to the last durable event "
        "(N minus the events of the first observation, over the time between); `*` marks a "
        "run too short for that, whose figure covers the whole run. start-up: process start "
        "to first durable batch. CPU: user + system seconds of the contender's processes per "
        "million events over the same window. Peak RSS: per process (per worker), "
        "VmHWM." + (f" x ceiling: ratio to {ceiling}." if ceiling else ""),
        "",
        "## Goals (issue 7)",
        "",
        "| goal | measured | met |",
        "|---|---:|:---:|",
    ]
    for g in record["goals"]:
        met = {True: "yes", False: "**no**", None: "-"}[g["met"]]
        out.append(f"| {g['goal']} | {g['value']} | {met} |")
    out += ["", "## What each contender does", ""]
    out += [f"- **{r['label']}** (`{r['name']}`): {r['what']}" for r in rows]
    extras = record.get("extras", {})
    if extras.get("validation"):
        out += ["", "## Validation per core (bench.validation)", "", extras["validation"]]
    if extras.get("publisher"):
        out += ["", "## Publisher vs raw producer (bench.publisher)", "", extras["publisher"]]
    return "\n".join(out) + "\n"


def write(record: dict[str, Any], results_dir: Path, publish_page: Path | None) -> Path:
    """JSON to `<results_dir>/<timestamp>.json`, Markdown to `latest.md` (and the page)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    page = markdown(record)
    (results_dir / "latest.md").write_text(page)
    if publish_page is not None:
        publish_page.write_text(page)
    return path
