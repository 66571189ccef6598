"""The leaderboard at scale: 1M comparisons over 20 engines, 1000 bootstrap replicates, one core.

Synthetic comparison_result lines (engines of known strengths, 2 to 4 candidates per
comparison, answers with markdown headers, list items, bold spans and filler words, some
engines more verbose than others; the winner drawn by the Luce model on strength plus a
style bonus; 10% of the comparisons ties) are written as finished part files in hourly
buckets of a day, 6 partitions. Then, pinned to one core with the BLAS and OpenMP pools at
one thread, the leaderboard's real code runs on them:
- read: `load_comparisons` (every finished line parsed, reduced to battle patterns);
- fit: `rate` — the point fit and `--bootstrap` refits on resampled pairwise count matrices;
- the same with `--since/--until` over half of the day (the reader opens half the buckets);
- sandwich: `rate(ci="sandwich")` on the same comparisons, and how far its interval widths
  are from the bootstrap's (issue 28);
- style control: `load_comparisons(style=True)` (features of every answer) and
  `rate(style=True, ci="sandwich")`; then `--style-bootstrap` replicates of it, timed apart.
The run fails (exit 1) when read + fit takes more than `--limit` CPU seconds (default 15,
issue 16) or style control (read + fit, sandwich) more than `--style-limit` (default 30,
issue 28); wall times are printed beside (on a shared machine they count other work too).

    python -m bench.leaderboard [--comparisons 1000000] [--engines 20] [--bootstrap 1000]
                                [--style-bootstrap 10] [--cpu 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from sinks.files.buckets import HOUR_MS, bucket_of
from sinks.files.names import finished_name
from sinks.offline.leaderboard import SCALE, Leaderboard, load_comparisons, rate

START = 1_800_000_000_000  # 2027-01-15 08:00 UTC
PARTITIONS = 6
FILE_LINES = 20_000
CATEGORIES = ("coding", "math", "writing", "hard")


STYLE_BONUS = np.array([0.0, 0.25, 0.08, 0.15, 0.01])  # per (-, header, item, bold, word)
TIE_SHARE = 0.1


def answer(rng: np.random.Generator, verbose: bool) -> tuple[str, np.ndarray]:
    """A markdown answer and its counts (1, headers, list items, bold spans, words)."""
    headers, items, bold = (int(x) for x in rng.integers(0, [3, 5, 3]))
    words = int(rng.integers(4, 40 if verbose else 16))
    text = "## Step\n" * headers + "- item\n" * items + "**note** " * bold + "word " * words
    return text, np.array([1.0, headers, items, bold, words])


def synthesize(directory: Path, n: int, engines: int, seed: int = 7) -> np.ndarray:
    """n comparisons over a day in `directory` (a comparisons channel dir); returns the true β
    (the strength without the style bonus)."""
    rng = np.random.default_rng(seed)
    beta = np.linspace(-1.5, 1.5, engines)
    sizes = rng.choice([2, 3, 4], size=n, p=[0.8, 0.15, 0.05])
    times = np.sort(rng.integers(START, START + 24 * HOUR_MS, size=n))
    keys = rng.random((n, engines))
    ids = [f"engine-{e:02d}" for e in range(engines)]
    gumbel = rng.gumbel(size=(n, 4))
    ties = rng.random(n) < TIE_SHARE
    order = np.argsort(keys, axis=1)[:, :4]  # 4 distinct random engines per comparison
    by_file: dict[tuple[str, int], list[bytes]] = {}
    for k in range(n):
        size = int(sizes[k])
        chosen = order[k, :size]
        answers = [answer(rng, e % 3 == 0) for e in chosen.tolist()]
        bonus = np.array([counts @ STYLE_BONUS for _, counts in answers])
        event: dict[str, Any] = {
            "comparison_id": f"c-{k}",
            "query": f"question {k}",
            "candidates": [
                {"engine_id": ids[e], "output": text, "metrics": {"ms": 40}}
                for e, (text, _) in zip(chosen.tolist(), answers, strict=True)
            ],
            "metrics": {"judge": "bench"},
            "category": CATEGORIES[k % len(CATEGORIES)],
            "timestamp": int(times[k]),
        }
        if ties[k]:
            event["tie"] = "tie" if k % 2 else "both_bad"
        else:
            utility = beta[chosen] + bonus + gumbel[k, :size]
            winner = int(chosen[np.argmax(utility)])  # Luce top-1
            event["winner"] = {"engine_id": ids[winner], "score": 0.8}
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


def error_to(board: Leaderboard, truth: dict[str, float]) -> float:
    """The largest distance of a rating to the truth, both centred on their means."""
    ratings = {e.engine_id: e.rating for e in board.entries}
    shift = np.mean(list(ratings.values())) - np.mean([truth[k] for k in ratings])
    return max(abs(r - shift - truth[k]) for k, r in ratings.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--engines", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--cpu", type=int, default=0, help="The one core to run on.")
    parser.add_argument("--limit", type=float, default=15.0, help="Seconds allowed.")
    parser.add_argument(
        "--style-limit", type=float, default=30.0, help="Seconds allowed for style control."
    )
    parser.add_argument(
        "--style-bootstrap", type=int, default=10, help="Style-controlled replicates to time."
    )
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
            cpu = time.process_time()
            started = time.perf_counter()
            comparisons = load_comparisons(directory)
            read = time.perf_counter() - started
            started = time.perf_counter()
            board = rate(comparisons, args.bootstrap, seed=0)
            fit = time.perf_counter() - started
            cpu_plain = time.process_time() - cpu
            started = time.perf_counter()
            half = rate(
                load_comparisons(directory, START + 6 * HOUR_MS, START + 18 * HOUR_MS),
                args.bootstrap,
                seed=0,
            )
            bounded = time.perf_counter() - started
            started = time.perf_counter()
            sandwich = rate(comparisons, ci="sandwich")
            sandwich_fit = time.perf_counter() - started
            del comparisons
            cpu = time.process_time()
            started = time.perf_counter()
            styled = load_comparisons(directory, style=True)
            style_read = time.perf_counter() - started
            started = time.perf_counter()
            controlled = rate(styled, ci="sandwich", style=True)
            style_fit = time.perf_counter() - started
            cpu_style = time.process_time() - cpu
            started = time.perf_counter()
            if args.style_bootstrap:
                rate(styled, args.style_bootstrap, seed=0, style=True)
            style_boot = time.perf_counter() - started - style_fit

        truth = {f"engine-{e:02d}": 1000 + SCALE * (b - beta.mean()) for e, b in enumerate(beta)}
        error = error_to(board, truth)
        covered = sum(e.ci_low <= truth[e.engine_id] <= e.ci_high for e in board.entries)
        width = np.mean([e.ci_high - e.ci_low for e in board.entries])
        boot_width = {e.engine_id: e.ci_high - e.ci_low for e in board.entries}
        apart = max(
            abs((e.ci_high - e.ci_low) / boot_width[e.engine_id] - 1) for e in sandwich.entries
        )
        total = read + fit
        style_total = style_read + style_fit
        print(f"read {read:.2f} s  ({args.comparisons / read:,.0f} comparisons/s)")
        print(f"fit + {args.bootstrap} bootstraps {fit:.2f} s  ({len(board.entries)} engines)")
        print(f"half the day (--since/--until, {half.comparisons:,}): read + fit {bounded:.2f} s")
        print(
            f"ratings: max |error| {error:.2f} points (style not held fixed), "
            f"{covered}/{len(board.entries)} intervals cover the truth, mean width {width:.1f}"
        )
        print(
            f"--ci sandwich: fit {sandwich_fit:.2f} s; interval widths within {apart * 100:.1f}% "
            "of the bootstrap's"
        )
        coefficients = ", ".join(f"{c.feature} {c.coefficient:+.3f}" for c in controlled.style)
        print(
            f"--style-control --ci sandwich: read {style_read:.2f} s + fit {style_fit:.2f} s; "
            f"max |error| {error_to(controlled, truth):.2f} points; {coefficients}"
        )
        if args.style_bootstrap:
            print(
                f"--style-control bootstrap: {style_boot / args.style_bootstrap:.2f} s per "
                f"replicate ({args.style_bootstrap} timed)"
            )
        # Judged on the CPU time of this process on its one core: on a shared machine the wall
        # time also counts the other processes that core ran meanwhile.
        verdict = "within" if cpu_plain <= args.limit else "OVER"
        print(
            f"leaderboard: {args.comparisons:,} comparisons, {args.engines} engines, "
            f"{args.bootstrap} bootstraps on one core (cpu {args.cpu}): {total:.1f} s "
            f"(read {read:.1f} + fit {fit:.1f}), CPU {cpu_plain:.1f} s, {verdict} the "
            f"{args.limit:g} s limit"
        )
        style_verdict = "within" if cpu_style <= args.style_limit else "OVER"
        print(
            f"style control: {args.comparisons:,} comparisons, sandwich, one core: "
            f"{style_total:.1f} s (read {style_read:.1f} + fit {style_fit:.1f}), CPU "
            f"{cpu_style:.1f} s, {style_verdict} the {args.style_limit:g} s limit"
        )
        ok = cpu_plain <= args.limit and cpu_style <= args.style_limit
        return 0 if ok and not math.isnan(total) else 1
    finally:
        if args.out is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
