"""The aggregation's fold rate beside the same aggregation done naively, with state sizes.

json-engine folds each execution into per-(engine, window) state with a bounded DDSketch;
the naive way keeps every latency and sorts at window close. Same seeded events, one core,
parsing excluded (both start from parsed dicts, as the worker hands them over).

Run: python -m bench.aggregation [--events N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np
import orjson

from streams import events
from streams.aggregates.windows import WindowState, window_start

WIDTH_MS = 60_000
ENGINES = [f"engine-{i}" for i in range(8)]


def workload(n: int, seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = 1_800_000_000_000
    return [events.engine_execution(rng, ENGINES[i % 8], start + i * 3) for i in range(n)]


def fold_sketch(evts: list[dict[str, Any]]) -> dict[tuple[str, int], WindowState]:
    state: dict[tuple[str, int], WindowState] = {}
    for e in evts:
        key = (e["engine_id"], window_start(e["timestamp"], WIDTH_MS))
        window = state.get(key)
        if window is None:
            window = state[key] = WindowState()
        m = e["metrics"]
        window.add_execution(m["latency_ms"], m["success"])
    return state


def fold_naive(evts: list[dict[str, Any]]) -> dict[tuple[str, int], list[tuple[float, bool]]]:
    state: dict[tuple[str, int], list[tuple[float, bool]]] = defaultdict(list)
    for e in evts:
        m = e["metrics"]
        state[(e["engine_id"], window_start(e["timestamp"], WIDTH_MS))].append(
            (m["latency_ms"], m["success"])
        )
    return state


def close_naive(values: list[tuple[float, bool]]) -> dict[str, float]:
    latencies = np.array([v[0] for v in values])
    return {
        f"p{int(q * 100)}": float(np.quantile(latencies, q, method="lower"))
        for q in (0.5, 0.95, 0.99)
    }


def measure(n: int) -> list[dict[str, Any]]:
    evts = workload(n)
    rows = []
    t0 = time.process_time()
    sketched = fold_sketch(evts)
    fold_s = time.process_time() - t0
    t0 = time.process_time()
    for key, window in sketched.items():
        window.record(key[0], key[1], WIDTH_MS)
    close_s = time.process_time() - t0
    sizes = [len(orjson.dumps(w.to_dict())) for w in sketched.values()]
    rows.append(
        {
            "contender": "json-engine fold (DDSketch)",
            "events_per_s": n / fold_s,
            "close_s": close_s,
            "windows": len(sketched),
            "max_state_bytes": max(sizes),
            "mean_state_bytes": sum(sizes) / len(sizes),
        }
    )
    t0 = time.process_time()
    naive = fold_naive(evts)
    fold_s = time.process_time() - t0
    t0 = time.process_time()
    for values in naive.values():
        close_naive(values)
    close_s = time.process_time() - t0
    sizes = [len(orjson.dumps(v)) for v in naive.values()]
    rows.append(
        {
            "contender": "naive (all latencies, sort at close)",
            "events_per_s": n / fold_s,
            "close_s": close_s,
            "windows": len(naive),
            "max_state_bytes": max(sizes),
            "mean_state_bytes": sum(sizes) / len(sizes),
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400_000)
    args = parser.parse_args(argv)
    rows = measure(args.events)
    print(f"{args.events} events, {len(ENGINES)} engines, {WIDTH_MS // 1000} s windows, one core")
    print(
        f"{'contender':<40} {'events/s':>10} {'close s':>8} {'windows':>8} "
        f"{'max state B':>12} {'mean state B':>12}"
    )
    for r in rows:
        print(
            f"{r['contender']:<40} {r['events_per_s']:>10,.0f} {r['close_s']:>8.3f} "
            f"{r['windows']:>8} {r['max_state_bytes']:>12,} {r['mean_state_bytes']:>12,.0f}"
        )
    print(
        f"fold rate ratio json-engine / naive: "
        f"{rows[0]['events_per_s'] / rows[1]['events_per_s']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
