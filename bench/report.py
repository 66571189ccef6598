"""Summaries, the printed table, the JSON record and the Markdown page of one benchmark run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import aggregation
from bench.measure import Run
from bench.workload import HOT_SHARE
from streams.local import kafka as local_kafka

CEILINGS = ("consumer-perf", "confluent-raw")


@dataclass(frozen=True)
class Goal:
    """`contender`'s median over `reference`'s in this one run, of `metric`: at least `bound`,
    or for a cost (lower is better) at most `bound`. With `shared`, only if every worker of
    the contender took part in every repetition: a second worker that wrote nothing has
    shared no load, whatever the ratio says."""

    issue: str
    text: str
    contender: str
    reference: str
    bound: float
    metric: str = "events_per_s"
    cost: bool = False
    shared: bool = False


GOALS = (
    Goal("25", "one worker ≥ 0.95x the parse+validate loop (our fast path)",
         "json-engine-1w", "confluent-parse", 0.95),
    Goal("25", "one worker ≥ 1.0x the parse+fastjsonschema loop",
         "json-engine-1w", "confluent-fjs", 1.0),
    Goal("25", "uncompressed: one worker ≥ 0.95x the parse+validate loop (our fast path)",
         "json-engine-1w-plain", "confluent-parse-plain", 0.95),
    Goal("25", "uncompressed: one worker ≥ 1.0x the parse+fastjsonschema loop",
         "json-engine-1w-plain", "confluent-fjs-plain", 1.0),
    Goal("25 (moonshot)", "one worker against the raw loop (no validation, fsync, transaction)",
         "json-engine-1w", "confluent-raw", 1.0),
    Goal("12", "one worker ≥ 0.7x Kafka Connect FileStreamSink",
         "json-engine-1w", "kafka-connect", 0.7),
    Goal("12", "CPU per event ≤ 1.3x the parse+validate loop's",
         "json-engine-1w", "confluent-parse", 1.3, "cpu_s_per_million", cost=True),
    Goal("12", "two workers ≥ 1.0x one worker (24 engines, keys spread over all 6 partitions)",
         "json-engine-2w-spread", "json-engine-1w-spread", 1.0, shared=True),
    Goal("12 (diagnostic)", "two workers ≥ 1.0x one worker, spread keys, executions channel "
         "only (one topic subscribed)", "json-engine-2w-spread-exec",
         "json-engine-1w-spread-exec", 1.0, shared=True),
    Goal("12", "fenced (Kafka transactions) ≥ 0.9x the same path unfenced",
         "json-engine-1w", "json-engine-1w-unfenced", 0.9),
    Goal("25", "aggregation on ≥ 0.85x sink-only", "json-engine-1w-agg", "json-engine-1w", 0.85),
    Goal("25", "S3 sink (local versitygw) ≥ 0.8x the filesystem sink", "json-engine-1w-s3",
         "json-engine-1w", 0.8),
    Goal("25", f"hot engine ({HOT_SHARE:.0%} of events unkeyed), aggregation on: two "
         "workers ≥ 1.2x one",
         "json-engine-2w-hot-agg", "json-engine-1w-hot-agg", 1.2, shared=True),
    Goal("7", "one worker ≥ Quix Streams", "json-engine-1w", "quix", 1.0),
    Goal("7", "one worker ≥ 6x the naive Faust agent", "json-engine-1w", "faust-naive", 6.0),
)  # fmt: skip
STATE_GOAL_BYTES = 64 * 1024
RSS_GOAL_MB = 300.0


def summarize(
    name: str, label: str, what: str, runs: list[Run], shape: str = "keyed"
) -> dict[str, Any]:
    """Median, min and max of the successful repetitions; errors kept verbatim."""
    ok = [r for r in runs if r.error is None and r.rate]
    out: dict[str, Any] = {
        "name": name,
        "label": label,
        "what": what,
        "workload": shape,
        "runs": [asdict(r) for r in runs],
        "ok": len(ok),
        "errors": [r.error for r in runs if r.error],
    }
    if ok:
        rates = [r.rate for r in ok if r.rate is not None]
        shares = [r.extra["written_share"] for r in ok if "written_share" in r.extra]
        out.update(
            events_per_s=statistics.median(rates),
            events_per_s_min=min(rates),
            events_per_s_max=max(rates),
            startup_s=_median([r.startup_s for r in ok]),
            cpu_s_per_million=_median([r.cpu_s_per_m for r in ok]),
            broker_cpu_s_per_million=_median([r.broker_cpu_s_per_m for r in ok]),
            machine_busy_cores=_median([r.machine_busy_cores for r in ok]),
            stolen_cores=_median([r.stolen_cores for r in ok]),
            peak_rss_mb=max((r.rss_mb for r in ok if r.rss_mb), default=None),
            steady=all(r.steady for r in ok),
            settled=all(r.extra.get("settled", True) for r in ok),
        )
        if shares:
            out["written_share"] = shares
        ratios = [r.extra["compression_ratio"] for r in ok if "compression_ratio" in r.extra]
        if ratios:
            out["compression_ratio"] = statistics.median(ratios)
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
    for g in GOALS:
        mine = by_name.get(g.contender, {}).get(g.metric)
        theirs = by_name.get(g.reference, {}).get(g.metric)
        goal: dict[str, Any] = {"issue": g.issue, "goal": g.text}
        goal |= {"contender": g.contender, "reference": g.reference}
        if mine and theirs:
            ratio = mine / theirs
            met = ratio <= g.bound if g.cost else ratio >= g.bound
            value = f"{ratio:.2f}x"
            if g.shared and not by_name[g.contender].get("settled", True):
                met = False
                value += " (a worker wrote nothing)"
            goal |= {"ratio": ratio, "value": value, "met": met}
            note = _note(by_name[g.contender], by_name[g.reference])
            paired = _per_repetition(by_name[g.contender], by_name[g.reference], g.metric)
            if paired:
                goal["per_repetition"] = paired
                note = "; ".join(filter(None, (_paired_text(paired), note)))
            if note:
                goal["note"] = note
        else:
            goal |= {"value": "not measured", "met": None}
        out.append(goal)
    for name, row in by_name.items():
        rss = row.get("peak_rss_mb")
        if name.startswith("json-engine") and rss:
            out.append(
                {
                    "issue": "7",
                    "goal": f"{row['label']}: peak RSS per worker ≤ {RSS_GOAL_MB:.0f} MB",
                    "value": f"{rss:.0f} MB",
                    "met": rss <= RSS_GOAL_MB,
                }
            )
    state = aggregation.measure(50_000)[0]["max_state_bytes"]  # bench.aggregation, in-process
    out.append(
        {
            "issue": "13",
            "goal": "aggregation state ≤ 64 KiB per engine-window (bench.aggregation)",
            "value": f"{state / 1024:.1f} KiB",
            "met": state <= STATE_GOAL_BYTES,
        }
    )
    return out


# A goal's metric as a Run field (a row's medians are named after them).
_RUN_FIELDS = {"events_per_s": "rate", "cpu_s_per_million": "cpu_s_per_m"}


def _per_repetition(mine: dict[str, Any], ref: dict[str, Any], metric: str) -> list[float]:
    """The ratio within each repetition where both sides completed: the two ran in the same
    round, a few minutes apart, so a slow stretch of the machine hits both more alike than it
    hits two medians."""
    name = _RUN_FIELDS.get(metric)
    if name is None:
        return []
    pairs = zip(mine.get("runs", []), ref.get("runs", []), strict=False)
    return [
        a[name] / b[name]
        for a, b in pairs
        if not a.get("error") and not b.get("error") and a.get(name) and b.get(name)
    ]


def _paired_text(ratios: list[float]) -> str:
    if len(ratios) < 2:
        return ""
    each = ", ".join(f"{r:.2f}" for r in ratios)
    return f"per repetition {each} (median {statistics.median(ratios):.2f})"


def _note(mine: dict[str, Any], ref: dict[str, Any]) -> str:
    """CPU figures beside a ratio: cores the machine kept busy (of all it has), per-event CPU
    of both sides and the broker's, the workers' shares of the lines."""
    parts = []
    cores = os.cpu_count() or 0
    a, b = mine.get("machine_busy_cores"), ref.get("machine_busy_cores")
    if a is not None and b is not None:
        parts.append(f"machine busy {a:.2f} vs {b:.2f} of {cores} cores")
    a, b = mine.get("stolen_cores"), ref.get("stolen_cores")
    if a is not None and b is not None:
        parts.append(f"stolen {a:.2f} vs {b:.2f}")
    a, b = mine.get("cpu_s_per_million"), ref.get("cpu_s_per_million")
    if a is not None and b is not None:
        parts.append(f"CPU {a:.1f} vs {b:.1f} s/M ev")
    a, b = mine.get("broker_cpu_s_per_million"), ref.get("broker_cpu_s_per_million")
    if a is not None and b is not None:
        parts.append(f"broker {a:.1f} vs {b:.1f} s/M ev")
    if mine.get("written_share"):
        runs = ", ".join("/".join(f"{s:.0%}" for s in shares) for shares in mine["written_share"])
        parts.append(f"lines written per worker, each repetition: {runs}")
    return "; ".join(parts)


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
        "source": source(),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
    }


def source() -> dict[str, Any] | None:
    """The commit of the code measured, and which top-level folders differ from it."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    changed = sorted({line[3:].split("/", 1)[0] for line in status if len(line) > 3})
    return {"commit": head, "uncommitted": changed}


# -- output -------------------------------------------------------------------------------


def _loads(values: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in values)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cells(row: dict[str, Any]) -> list[str]:
    if not row.get("events_per_s"):
        reason = (row["errors"] or ["skipped"])[0].splitlines()[0][:60]
        blank = [""] * (len(HEADER) - 4)
        return [row["label"], "failed", reason, *blank, f"0/{len(row['runs'])}"]
    return [
        row["label"],
        f"{row['events_per_s']:,.0f}"
        + ("" if row["steady"] else "*")
        + ("" if row.get("settled", True) else "†"),
        f"{row['events_per_s_min']:,.0f}-{row['events_per_s_max']:,.0f}",
        _fmt(row.get("x_ceiling"), ".2f"),
        _fmt(row["startup_s"], ".1f"),
        _fmt(row["cpu_s_per_million"], ".1f"),
        _fmt(row.get("broker_cpu_s_per_million"), ".1f"),
        _fmt(row.get("machine_busy_cores"), ".2f"),
        _fmt(row.get("stolen_cores"), ".2f"),
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
    "broker CPU s/M ev",
    "busy cores",
    "stolen cores",
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
        f"{env['date']}, `{env['command']}`; engine_execution events of "
        f"~{cfg['avg_bytes']:.0f} B, {cfg['partitions']} partitions, seed "
        f"{cfg['seed']}; median of {cfg['repeat']} repetition(s), each from a fresh consumer "
        f"group, one contender at a time, on one broker ({cfg['broker']}). The workloads "
        "(bench/workload.py), events per partition:",
        "",
        *_workload_lines(cfg),
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"load average (1, 5, 15 min) {_loads(machine['load_avg_at_start'])} at the start, "
        f"{_loads(machine['load_avg_at_end'])} at the end: the broker and the contender share "
        "the cores with whatever else runs, and a loaded machine makes every figure noisy.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
        *_source_lines(env.get("source")),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|",
    ]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    ceiling = record.get("ceiling")
    out += [
        "",
        "events/s: steady state, from the first durable batch until 95% of the events are "
        "durable (the events between the two observations over the time between; the end of "
        "a finite topic is not steady: a last partial batch waits for a flush timer); `*` marks a "
        "run too short for that, whose figure covers the whole run; `†` a run with several "
        "workers in which one had written nothing yet by the end of the window (the window "
        "then starts at the first output all the same). json-engine's durable "
        "progress is its group's committed offsets (committed in the checkpoint's "
        "transaction). start-up: process start to first durable batch. CPU: user + system "
        "seconds of the contender's processes per million events over the same window; "
        "broker CPU: the broker's over the same window; busy cores: the whole machine's "
        f"busy CPU over the window (of {machine['cores']} cores: contender, broker and "
        "anything else); stolen cores: of those, the time the hypervisor gave the machine's "
        "cores to other guests (steal; a repetition with more of it is slower for reasons "
        "outside the code). Peak RSS: per process (per worker), VmHWM."
        + (f" x ceiling: ratio to {ceiling}." if ceiling else ""),
        "",
        "## Goals (issues 7, 12, 13)",
        "",
        "Ratios of the medians above, from this one run; beside each, the ratio within each "
        "repetition (both sides ran in the same round) and their median.",
        "",
        "| issue | goal | measured | met | CPU and shares (goal's row vs its reference) |",
        "|---|---|---:|:---:|---|",
    ]
    for g in record["goals"]:
        met = {True: "yes", False: "**no**", None: "-"}[g["met"]]
        out.append(
            f"| {g.get('issue', '')} | {g['goal']} | {g['value']} | {met} | {g.get('note', '')} |"
        )
    out += _compression_lines(rows)
    out += ["", "## What each contender does", ""]
    out += [f"- **{r['label']}** (`{r['name']}`): {r['what']}" for r in rows]
    extras = record.get("extras", {})
    if extras.get("validation"):
        out += ["", "## Validation per core (bench.validation)", "", extras["validation"]]
    if extras.get("publisher"):
        out += ["", "## Publisher vs raw producer (bench.publisher)", "", extras["publisher"]]
    return "\n".join(out) + "\n"


def _compression_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Compressed files beside plain ones, from this one run (issue 27)."""
    plain = next((r for r in rows if r["name"] == "json-engine-1w"), None)
    compressed = [r for r in rows if r.get("compression_ratio")]
    if not compressed:
        return []
    out = [
        "",
        "## Compressed files (issue 27)",
        "",
        "| files | compression ratio (published bytes / file bytes) | events/s | x plain |",
        "|---|---:|---:|---:|",
    ]
    for row in compressed:
        rate = row.get("events_per_s")
        base = plain.get("events_per_s") if plain else None
        versus = f"{rate / base:.2f}" if rate and base else "-"
        out.append(
            f"| {row['label']} | {row['compression_ratio']:.2f} | {_fmt(rate, ',.0f')} | {versus} |"
        )
    return out


def _source_lines(src: dict[str, Any] | None) -> list[str]:
    if not src:
        return []
    text = f"Code measured: commit `{src['commit']}`"
    if src["uncommitted"]:
        text += ", with uncommitted changes in " + ", ".join(f"`{d}/`" for d in src["uncommitted"])
    return ["", text + "."]


def _workload_lines(cfg: dict[str, Any]) -> list[str]:
    texts = {
        "keyed": "keyed by engine_id, 8 engines (murmur2 fills 4 of the 6 partitions; a second "
        "worker can only take over whole partitions)",
        "spread": "keyed by engine_id, {engines} engines, 4 hashing to each partition",
        "hot": "one engine with {share:.0%} of the events, produced without key (spread over "
        "every partition), the rest keyed over 7 engines",
    }
    lines = []
    for shape, w in cfg.get("workloads", {}).items():
        text = texts.get(shape, shape).format(
            engines=w["engines"], share=w["unkeyed"] / max(1, sum(w["partition_counts"]))
        )
        counts = ", ".join(map(str, w["partition_counts"]))
        events = sum(w["partition_counts"])
        lines.append(f"- `{shape}` ({events:,} events): {text}: {counts}")
    return lines


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
