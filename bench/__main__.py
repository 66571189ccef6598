"""`python -m bench`: the pipeline measured beside its anchors, in one run (issues 7, 12, 13).

Starts its own broker (127.0.0.1:19620, temporary data directory; bench/broker.py) unless
`KAFKA_BOOTSTRAP_SERVERS` is set, publishes each seeded workload the selected contenders read
once to a fresh topic (bench/workload.py: keyed, spread, hot), then runs each contender
`--repeat` times, one at a time, repetitions interleaved so that load from elsewhere hits
every contender alike. Prints a table; writes `bench/results/<time>.json`,
`bench/results/latest.md` and, for a full run, `bench/RESULTS.md`.

    python -m bench                      # everything, 200k events, 3 repetitions
    python -m bench --smoke              # tiny, once, only what needs no extra download
    python -m bench --only json-engine-1w,confluent-parse --events 50000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import extras, measure, report
from bench.broker import DEFAULT_PORT, broker
from bench.contenders import Contender, Context, registry
from bench.contenders.json_engine import JsonEngineSink
from bench.contenders.quix import installed_version
from bench.measure import Run, RunError
from bench.workload import EVENTS_SCALE, PARTITIONS, SHAPES, Workload, publish
from streams.local.kafka import LocalKafkaError

HERE = Path(__file__).resolve().parent
EXTRAS = ("validation", "publisher")
SMOKE_EVENTS = 3000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [c.name for c in registry()] + list(EXTRAS)
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--events", type=int, default=None, help="events (default 200000)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--smoke", action="store_true", help="tiny N, once, no extra downloads")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(names)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of its own broker")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per repetition")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write py-spy profiles (collapsed stacks, top functions) of the json-engine "
        "workers to this directory",
    )
    args = parser.parse_args(argv)
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(args.only) - set(names)
    if unknown:
        parser.error(f"unknown --only name(s) {sorted(unknown)}; known: {', '.join(names)}")
    if args.events is None:
        args.events = SMOKE_EVENTS if args.smoke else 200_000
    if args.repeat is None:
        args.repeat = 1 if args.smoke else 3
    if args.events < 100 or args.repeat < 1:
        parser.error("--events must be >= 100 and --repeat >= 1")
    if args.timeout is None:
        args.timeout = 90 + args.events / 1000  # the slowest (naive Faust) does ~5-10k/s
    return args


def selected(args: argparse.Namespace) -> tuple[list[Contender], list[str]]:
    contenders = [c for c in registry() if not args.smoke or c.smoke]
    extra_names = [] if args.smoke else list(EXTRAS)
    if args.only:
        contenders = [c for c in contenders if c.name in args.only]
        extra_names = [e for e in EXTRAS if e in args.only]
    return contenders, extra_names


def say(text: str) -> None:
    print(text, flush=True)


def warm_up(ctx: Context, contenders: list[Contender]) -> None:
    """A broker that has run for a while has compiled its hot paths; one started for this run
    has not, and its JIT compiler took up to half a core for minutes (8.9 s of CPU in two
    repetitions of one contender), charged to whichever contender first ran each path. One
    untimed json-engine run with the aggregation on (fetches, transactions with records and
    offsets) compiles them before anything is measured."""
    if not any(isinstance(c, JsonEngineSink) for c in contenders):
        return
    say("warming the broker up: one untimed json-engine run, aggregation on…")
    run = JsonEngineSink(workers=1, aggregation=True).run(ctx, -1)
    if run.error:
        say(f"  the warm-up failed (the figures below include the broker's warm-up): {run.error}")


def run_contenders(ctx: Context, contenders: list[Contender], repeat: int) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {c.name: [] for c in contenders}
    for rep in range(repeat):
        for c in contenders:
            started = time.monotonic()
            mine = ctx.for_shape(c.shape)
            try:
                run = c.run(mine, rep)
            except RunError as exc:
                run = Run(events=mine.workload.events, error=str(exc))
            except Exception as exc:  # one broken contender must not hide the others' numbers
                run = Run(events=mine.workload.events, error=f"{exc!r}\n{traceback.format_exc()}")
            runs[c.name].append(run)
            took = time.monotonic() - started
            if run.error:
                say(f"  [{rep + 1}/{repeat}] {c.label:<40} FAILED ({took:.0f} s): {run.error}")
            else:
                say(
                    f"  [{rep + 1}/{repeat}] {c.label:<40} {run.rate:>10,.0f} ev/s"
                    f"{'' if run.steady else '*'}  start-up {run.startup_s:5.1f} s"
                    f"  ({took:.0f} s)"
                )
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    contenders, extra_names = selected(args)
    work_dir = Path(tempfile.mkdtemp(prefix="json-engine-bench-"))
    started = time.monotonic()
    load_at_start = os.getloadavg()
    record: dict[str, Any] = {}
    try:
        with broker(args.port) as kafka:
            bootstrap = kafka.bootstrap
            measure.BROKER_PIDS[:] = kafka.pids
            say(f"broker {bootstrap} ({'started for this run' if kafka.own else 'given'})")
            skipped: dict[str, str] = {}
            ready: list[Contender] = []
            for c in contenders:
                try:
                    c.prepare(downloads=not args.smoke)
                    ready.append(c)
                except Exception as exc:
                    skipped[c.name] = f"skipped: could not prepare: {exc}"
                    say(f"  {c.label}: {skipped[c.name]}")
            workloads: dict[str, Workload] = {}
            shapes = {"keyed"} | {c.shape for c in ready}
            for shape in (s for s in SHAPES if s in shapes):
                count = args.events * EVENTS_SCALE[shape]
                say(f"publishing {count:,} events ({shape})…")
                w = workloads[shape] = publish(bootstrap, count, args.seed, shape)
                say(
                    f"  {w.topic}: {w.events:,} events, ~{w.avg_bytes:.0f} B,"
                    f" {w.publish_seconds:.1f} s; {w.describe()}"
                )
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
            ctx = Context(
                workloads["keyed"],
                work_dir,
                args.timeout,
                args.profile,
                workloads,
                quiet_start=not args.smoke,  # a smoke run measures nothing: no waits
            )
            if not args.smoke:
                warm_up(ctx, ready)
            runs = run_contenders(ctx, ready, args.repeat)
            for name, reason in skipped.items():
                runs[name] = [Run(events=args.events, error=reason)]
            extra_results = run_extras(extra_names, bootstrap, args)
            for w in workloads.values():
                _delete_topics(w)
            record = build_record(args, contenders, runs, extra_results, workloads, bootstrap)
            env = report.environment({"quixstreams": installed_version()}, load_at_start)
            record = {"environment": env, **record}
    except LocalKafkaError as exc:
        say(f"cannot start the benchmark's broker (or set KAFKA_BOOTSTRAP_SERVERS): {exc}")
        return 2
    finally:
        if args.keep:
            say(f"scratch directory kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    # The committed page shows only runs of everything with >= 3 repetitions.
    whole = not args.smoke and not args.only and args.repeat >= 3
    publish_page = HERE / "RESULTS.md" if whole else None
    path = report.write(record, args.results_dir, publish_page)
    say("")
    if args.smoke:
        say("smoke run: a tiny workload, the figures below mean nothing")
    say(report.text_table(record["contenders"]))
    for goal in record["goals"]:
        mark = {True: "yes", False: "NO", None: "-"}[goal["met"]]
        note = f" ({goal['note']})" if goal.get("note") else ""
        say(f"  goal: {goal['goal']}: {goal['value']} [{mark}]{note}")
    say(f"\nwritten: {path}" + (f", {publish_page}" if publish_page else ""))
    say(f"total {time.monotonic() - started:.0f} s")
    return 0


def run_extras(names: list[str], bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        say(f"running bench.{name}…")
        try:
            if name == "validation":
                table, rows = extras.validation(min(args.events, 20_000), args.repeat)
            else:
                table, rows = extras.publisher(bootstrap, args.events, args.repeat)
            out[name] = table
            out[f"{name}_rows"] = rows
        except Exception as exc:
            out[name] = f"failed: {exc}"
            say(f"  bench.{name} failed: {exc}")
    return out


def build_record(
    args: argparse.Namespace,
    contenders: list[Contender],
    runs: dict[str, list[Run]],
    extra_results: dict[str, Any],
    workloads: dict[str, Workload],
    bootstrap: str,
) -> dict[str, Any]:
    rows = [report.summarize(c.name, c.label, c.what, runs[c.name], c.shape) for c in contenders]
    ceiling = report.add_ratios(rows)
    workload = workloads["keyed"]
    return {
        "config": {
            "events": workload.events,
            "avg_bytes": workload.avg_bytes,
            "partitions": PARTITIONS,
            "seed": workload.seed,
            "repeat": args.repeat,
            "smoke": args.smoke,
            "broker": bootstrap,
            "topic": workload.topic,
            "publish_seconds": workload.publish_seconds,
            "partition_counts": workload.partition_counts,
            "workloads": {
                shape: {
                    "topic": w.topic,
                    "engines": w.engines,
                    "unkeyed": w.unkeyed,
                    "avg_bytes": w.avg_bytes,
                    "partition_counts": w.partition_counts,
                    "publish_seconds": w.publish_seconds,
                }
                for shape, w in workloads.items()
            },
        },
        "ceiling": ceiling,
        "contenders": rows,
        "goals": report.goals(rows),
        "extras": extra_results,
    }


def _delete_topics(workload: Workload) -> None:
    """Leave a given broker as it was (its own broker goes away with its data anyway)."""
    from streams.topics import admin_client, list_topics

    cfg = workload.config()
    try:
        names = [t.name for t in list_topics(cfg)]
        admin = admin_client(cfg)  # kept alive until every deletion answered
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(30)
    except Exception as exc:
        say(f"  (could not delete the bench topics: {exc})")


if __name__ == "__main__":
    sys.exit(main())
