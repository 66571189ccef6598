"""The leaderboard at scale: 1M comparisons over 20 engines, 1000 bootstrap replicates, one core.

Synthetic comparison_result lines (engines of known strengths, 2 to 4 candidates per
comparison, the winner drawn by the Bradley-Terry / Luce model) are written as finished part
files in hourly buckets of a day, 6 partitions. Then, pinned to one core with the BLAS and
OpenMP pools at one thread, the leaderboard's real code runs on them:
- read: `load_comparisons` (every finished line parsed, reduced to battle patterns);
- fit: `rate` — the point fit and `--bootstrap` refits on resampled pairwise count matrices;
- the same with `--since/--until` over half of the day (the reader opens half the buckets).
The run fails (exit 1) when read + fit exceeds `--limit` seconds (default 15, issue 16).

    python -m bench.leaderboard [--comparisons 1000000] [--engines 20] [--bootstrap 1000]
                                [--cpu 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from sinks.files.buckets import HOUR_MS, bucket_of
from sinks.files.names import finished_name
from sinks.offline.leaderboard import SCALE, load_comparisons, rate

START = 1_800_000_000_000  # 2027-01-15 08:00 UTC
PARTITIONS = 6
FILE_LINES = 20_000


def synthesize(directory: Path, n: int, engines: int, seed: int = 7) -> np.ndarray:
    """n comparisons over a day in `directory` (a comparisons channel dir); returns the true β."""
    rng = np.random.default_rng(seed)
    beta = np.linspace(-1.5, 1.5, engines)
    sizes = rng.choice([2, 3, 4], size=n, p=[0.8, 0.15, 0.05])
    times = np.sort(rng.integers(START, START + 24 * HOUR_MS, size=n))
    keys = rng.random((n, engines))
    ids = [f"engine-{e:02d}" for e in range(engines)]
    gumbel = rng.gumbel(size=(n, 4))
    order = np.argsort(keys, axis=1)[:, :4]  # 4 distinct random engines per comparison
    by_file: dict[tuple[str, int], list[bytes]] = {}
    for k in range(n):
        size = int(sizes[k])
        chosen = order[k, :size]
        winner = int(chosen[np.argmax(beta[chosen] + gumbel[k, :size])])  # Luce top-1
        event = {
            "comparison_id": f"c-{k}",
            "query": f"question {k}",
            "candidates": [
                {"engine_id": ids[e], "output": f"answer of {ids[e]}", "metrics": {"ms": 40}}
                for e in chosen.tolist()
            ],
            "winner": {"engine_id": ids[winner], "score": 0.8},
            "metrics": {"judge": "bench"},
            "timestamp": int(times[k]),
        }
        by_file.setdefault((bucket_of(int(times[k])), k % PARTITIONS), []).append(
            orjson.dumps(event) + b"\n"
        )
    offsets = [0] * PARTITIONS
    for (bucket, partition), lines in sorted(by_file.items()):
        folder = directory / bucket
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(lines), FILE_LINES):
            chunk = lines[i : i + FILE_LINES]
            first = offsets[partition]
            offsets[partition] += len(chunk)
            name = finished_name(partition, first, first + len(chunk) - 1)
            (folder / name).write_bytes(b"".join(chunk))
    return beta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--engines", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--cpu", type=int, default=0, help="The one core to run on.")
    parser.add_argument("--limit", type=float, default=15.0, help="Seconds allowed.")
    parser.add_argument("--out", type=Path, help="Keep the files here (else a temp dir).")
    args = parser.parse_args()

    base = args.out or Path(tempfile.mkdtemp(prefix="bench-leaderboard-"))
    directory = base / "comparisons"
    try:
        started = time.perf_counter()
        beta = synthesize(directory, args.comparisons, args.engines)
        size = sum(p.stat().st_size for p in directory.rglob("*.jsonl"))
        print(
            f"wrote {args.comparisons:,} comparisons ({size / 2**20:.0f} MiB) over "
            f"{args.engines} engines in {time.perf_counter() - started:.1f} s"
        )
        os.sync()  # files at rest: the write-back of the new files does not share the core
        os.sched_setaffinity(0, {args.cpu})
        with threadpool_limits(limits=1):
            started = time.perf_counter()
            comparisons = load_comparisons(directory)
            read = time.perf_counter() - started
            started = time.perf_counter()
            board = rate(comparisons, args.bootstrap, seed=0)
            fit = time.perf_counter() - started
            started = time.perf_counter()
            half = rate(
                load_comparisons(directory, START + 6 * HOUR_MS, START + 18 * HOUR_MS),
                args.bootstrap,
                seed=0,
            )
            bounded = time.perf_counter() - started

        truth = {f"engine-{e:02d}": 1000 + SCALE * (b - beta.mean()) for e, b in enumerate(beta)}
        error = max(abs(e.rating - truth[e.engine_id]) for e in board.entries)
        covered = sum(e.ci_low <= truth[e.engine_id] <= e.ci_high for e in board.entries)
        in_order = [e.engine_id for e in board.entries] == sorted(truth, key=lambda k: -truth[k])
        width = np.mean([e.ci_high - e.ci_low for e in board.entries])
        total = read + fit
        print(f"read {read:.2f} s  ({args.comparisons / read:,.0f} comparisons/s)")
        print(
            f"fit + {args.bootstrap} bootstraps {fit:.2f} s  ({len(comparisons.patterns)} patterns)"
        )
        print(f"half the day (--since/--until, {half.comparisons:,}): read + fit {bounded:.2f} s")
        print(
            f"ratings: max |error| {error:.2f} points, true order {in_order}, "
            f"{covered}/{len(board.entries)} intervals cover the truth, mean width {width:.1f}"
        )
        verdict = "within" if total <= args.limit else "OVER"
        print(
            f"leaderboard: {args.comparisons:,} comparisons, {args.engines} engines, "
            f"{args.bootstrap} bootstraps on one core (cpu {args.cpu}): {total:.1f} s "
            f"(read {read:.1f} + fit {fit:.1f}), {verdict} the {args.limit:g} s limit"
        )
        return 0 if total <= args.limit and not math.isnan(total) else 1
    finally:
        if args.out is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
