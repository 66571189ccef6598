"""Validation rate per core: our Validator (orjson + fastjsonschema) beside the jsonschema package.

Every column gets the same seeded events as JSON bytes and includes parsing: ours is
`Validator.validate(kind, raw)`, the reference `Draft7Validator(schema).validate(json.loads(raw))`;
parsing alone and orjson + plain fastjsonschema are shown for scale.
Rates are events per second of CPU time of this (single-threaded) process, so that other load on
a shared machine does not count against us; the best of `--repeat` runs is kept.

    python -m bench.validation [--events 20000] [--repeat 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

import fastjsonschema
import orjson
from jsonschema import Draft7Validator

from streams import events
from streams.alerts.regression import check
from streams.config import RegressionConfig
from streams.validation import KINDS, Validator, load_schema

TS = 1_764_300_000_000


def _aggregate(rng: random.Random, i: int) -> dict[str, Any]:
    count = rng.randint(1, 5000)
    successes = rng.randint(0, count)
    comparisons = rng.randint(0, 100)
    wins = rng.randint(0, comparisons)
    low = rng.uniform(1, 20)
    window_start = TS - TS % 60_000 + 60_000 * (i // 5)
    return {
        "schema_version": 1,
        "engine_id": rng.choice(events.ENGINE_IDS),
        "window_start": window_start,
        "window_end": window_start + 60_000,
        "count": count,
        "success_count": successes,
        "success_rate": successes / count,
        "latency_ms": {
            "min": low,
            "max": low * 40,
            "avg": low * 3,
            "p50": low * 2,
            "p95": low * 10,
            "p99": low * 30,
        },
        "quality": {"count": comparisons, "mean": rng.random() if comparisons else None},
        "comparisons": {
            "count": comparisons,
            "wins": wins,
            "win_rate": wins / comparisons if comparisons else 0.0,
        },
    }


def _dead_letter(rng: random.Random, i: int) -> dict[str, Any]:
    bad = events.engine_execution(rng, rng.choice(events.ENGINE_IDS), TS + i)
    bad["metrics"]["latency_ms"] = -1
    return {
        "schema_version": 1,
        "channel": "engine_execution",
        "topic": "json-engine.engine-execution",
        "partition": rng.randrange(6),
        "offset": i,
        "error": "metrics.latency_ms must be >= 0",
        "reason": "schema",
        "payload": json.dumps(bad),
        "payload_truncated": False,
        "received_at": TS + i,
    }


def _alert(rng: random.Random, i: int) -> dict[str, Any]:
    """A regression alert as the merge emits it: a window whose success and p95 both fell
    behind a steady baseline (streams/alerts/regression.py makes the record)."""
    window = _aggregate(rng, i)
    window["count"] = count = rng.randint(200, 5000)
    window["success_count"] = count // 2
    window["success_rate"] = 0.5
    p95 = window["latency_ms"]["p95"]
    baseline: list[list[Any]] = [[count, count, p95 / 4] for _ in range(30)]
    alert = check(window, baseline, RegressionConfig())
    assert alert is not None
    return alert


GENERATORS: dict[str, Callable[[random.Random, int], dict[str, Any]]] = {
    "engine_execution": lambda rng, i: events.engine_execution(
        rng, rng.choice(events.ENGINE_IDS), TS + i
    ),
    "comparison_result": lambda rng, i: events.comparison_result(rng, events.ENGINE_IDS, TS + i),
    "training_sample": lambda rng, i: events.training_sample(rng, TS + i),
    "aggregated_stats": _aggregate,
    "dead_letter": _dead_letter,
    "alerts": _alert,
}
assert set(GENERATORS) == set(KINDS)


def payloads(kind: str, count: int, seed: int) -> list[bytes]:
    """`count` valid events of `kind` as JSON bytes, the same for the same seed."""
    rng = random.Random(f"{seed}-{kind}")
    return [orjson.dumps(GENERATORS[kind](rng, i)) for i in range(count)]


def rate(run: Callable[[], None], count: int, repeat: int) -> float:
    """Best events/s of CPU time over `repeat` runs of `run` (which handles `count` events)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return count / max(best, 1e-9)


def measure(kind: str, raws: list[bytes], repeat: int) -> dict[str, float]:
    """Rates of parsing only, plain fastjsonschema, our Validator and jsonschema, same payloads."""
    validate = Validator().validate
    plain = fastjsonschema.compile(load_schema(kind))
    reference = Draft7Validator(load_schema(kind)).validate
    loads = orjson.loads

    def parse_only() -> None:
        for raw in raws:
            loads(raw)

    def fastjsonschema_only() -> None:
        for raw in raws:
            plain(loads(raw))

    def ours() -> None:
        for raw in raws:
            validate(kind, raw)

    def theirs() -> None:
        for raw in raws:
            reference(json.loads(raw))

    ours()  # also proves every payload valid before anything is timed
    count = len(raws)
    return {
        "parse": rate(parse_only, count, repeat),
        "fastjsonschema": rate(fastjsonschema_only, count, repeat),
        "ours": rate(ours, count, repeat),
        "jsonschema": rate(theirs, count, max(1, repeat // 3)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per type")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    args = parser.parse_args(argv)

    print(
        f"validation rate per core, {args.events} seeded events per type, parsing included,"
        f" best of {args.repeat} (CPU time)"
    )
    header = (
        f"{'type':<18} {'bytes/ev':>8} {'orjson only':>12} {'+fastjsonsch.':>13}"
        f" {'Validator':>12} {'jsonschema':>12} {'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for kind in args.kinds:
        raws = payloads(kind, args.events, args.seed)
        result = measure(kind, raws, args.repeat)
        size = sum(map(len, raws)) / len(raws)
        print(
            f"{kind:<18} {size:>8.0f} {result['parse']:>12,.0f}"
            f" {result['fastjsonschema']:>13,.0f} {result['ours']:>12,.0f}"
            f" {result['jsonschema']:>12,.0f} {result['ours'] / result['jsonschema']:>6.1f}x"
        )
    print(
        "events/s per core. orjson only: parsing alone; +fastjsonsch.: orjson + the plain"
        " fastjsonschema validator;\nValidator: streams.validation (size, parse, fast path,"
        " depth, semantic checks); ratio = Validator / jsonschema (Draft7Validator + json.loads)"
    )


if __name__ == "__main__":
    main()
