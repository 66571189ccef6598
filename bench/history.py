"""Output that scales with its history: what taking a partition costs after a day and a year.

A synthetic training-sample channel holds one day, then one year, of hourly buckets
(`--partitions` partitions, `--lines` samples per part file). Measured, with the sink's real
code (no Kafka: the Kafka side of a takeover, a committed-offset fetch and a claim, does not
depend on history):
- take one partition (`ChannelSink.assign`) and then dedupe its first new sample, which loads
  the ids of that sample's bucket only;
- a worker restart: a new sink taking every partition;
- beside it, the way before buckets: list the channel and load every id of the partition;
- retention: delete all buckets older than 30 days of the year;
- files per hour and partition at the default roll settings, low and high traffic.

    python -m bench.history [--partitions 6] [--lines 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import orjson

from sinks.files.buckets import HOUR_MS, bucket_of
from sinks.files.names import FINISHED, finished_name
from sinks.files.retention import delete_before
from streams.config import ChannelConfig, JsonEngineConfig
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.dedupe import RecordIds
from streams.readers.route import LocalRecord
from streams.worker.sink import ChannelSink


def synthesize(directory: Path, hours: int, partitions: int, lines: int, now_ms: int) -> int:
    """Hourly buckets back from now, one part file per partition each; returns files made."""
    made = 0
    for h in range(hours):
        start = now_ms - h * HOUR_MS
        folder = directory / bucket_of(start)
        folder.mkdir(parents=True, exist_ok=True)
        for p in range(partitions):
            first = (hours - h) * lines
            body = b"".join(
                orjson.dumps({"sample_id": str(uuid.uuid4()), "created_at": start}) + b"\n"
                for _ in range(lines)
            )
            (folder / finished_name(p, first, first + lines - 1)).write_bytes(body)
            made += 1
    return made


def record_ids(base: Path) -> RecordIds:
    """The training-sample topic's id checks of one partition, on the synthetic history."""
    return RecordIds(
        "training_sample", "bench.training-sample", 1, base, 168, 10**6, lambda _p: set()
    )


def measured(fn: Any) -> tuple[float, float]:
    """(seconds, peak MiB allocated) of one call."""
    tracemalloc.start()
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20


def take_partition(base: Path, now_ms: int) -> None:
    ids = record_ids(base)
    ids.assign(0, None)
    new = {"sample_id": str(uuid.uuid4()), "created_at": now_ms}
    ids.begin()
    ids.check(0, 0, LocalRecord(10**9, orjson.dumps(new)), new)
    ids.end(0, 1)


def restart(base: Path, partitions: int) -> None:
    config = JsonEngineConfig()
    channel = config.channels.training_sample
    s = ChannelSink(
        "training_sample", "bench.training-sample", channel, base, DeadLetterPolicy(config)
    )
    for p in range(partitions):
        s.assign(p, 1, [])


def load_everything(directory: Path) -> None:
    """Before buckets: every id the partition's files ever held."""
    seen = set()
    for path in directory.rglob("p000-*.jsonl"):
        if FINISHED.match(path.name):
            for line in path.read_bytes().splitlines():
                seen.add(orjson.loads(line)["sample_id"])


def files_per_hour(rate: float, seconds: float, scale: float) -> float:
    """Run the real sink at `rate` records/s for `seconds` with the default roll settings
    (`roll_seconds` and `roll_bytes`) divided by `scale`, and scale the count of finished
    files back: files per hour = count * 3600 / (seconds * scale)."""
    defaults = ChannelConfig(filename="events.jsonl")
    config = JsonEngineConfig()
    base = Path(tempfile.mkdtemp(prefix="je-rate-"))
    try:
        channel = config.channels.engine_execution.model_copy(
            update={
                "roll_seconds": defaults.roll_seconds / scale,
                "roll_bytes": int(defaults.roll_bytes / scale),
            }
        )
        s = ChannelSink("engine_execution", "bench.e", channel, base, DeadLetterPolicy(config))
        s.assign(0, 1, [])
        value = orjson.dumps({"timestamp": int(time.time() * 1000), "pad": "x" * 500})
        started, offset = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            count = max(1, int(rate / 10))  # 0.1 s a tick at the real rate; rolls scaled down
            items = [
                (LocalRecord(offset + i, value), orjson.loads(value), None) for i in range(count)
            ]
            offset += count
            s.on_parsed(0, items)
            s.flush()
            s.committed()
            s.roll_due(time.monotonic())
            time.sleep(0.1)
        files = sum(1 for _ in base.rglob("*.jsonl"))
        return files * 3600 / (seconds * scale)
    finally:
        shutil.rmtree(base)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    now_ms = int(time.time() * 1000)
    root = args.out or Path(tempfile.mkdtemp(prefix="je-history-"))
    rows = []
    try:
        for label, hours in (("1 day", 24), ("1 year", 365 * 24)):
            base = root / label.replace(" ", "-")
            directory = base / "training_samples"
            made = synthesize(directory, hours, args.partitions, args.lines, now_ms)
            take = measured(lambda base=base: take_partition(base, now_ms))
            again = measured(lambda base=base: restart(base, args.partitions))
            before = measured(lambda directory=directory: load_everything(directory))
            rows.append((label, made, take, again, before))
        year = root / "1-year" / "training_samples"
        started = time.perf_counter()
        deleted = delete_before(year, now_ms - 30 * 24 * HOUR_MS)
        retention = time.perf_counter() - started
        print(f"history: {args.partitions} partitions, {args.lines} samples per part file")
        print(
            f"{'history':<8} {'files':>7} {'take partition s':>17} {'MiB':>6} "
            f"{'restart s':>10} {'MiB':>6} {'load all ids (before) s':>24} {'MiB':>7}"
        )
        for label, made, take, again, before in rows:
            print(
                f"{label:<8} {made:>7} {take[0]:>17.4f} {take[1]:>6.2f} {again[0]:>10.4f} "
                f"{again[1]:>6.2f} {before[0]:>24.3f} {before[1]:>7.1f}"
            )
        ratio = rows[1][2][0] / max(rows[0][2][0], 1e-9)
        print(f"take partition, year / day: {ratio:.2f}x (goal <= 2x)")
        print(f"retention: {deleted} files of 335 days deleted in {retention:.2f} s")
        low, high = files_per_hour(1, 12, 100), files_per_hour(20_000, 12, 10)
        print(
            f"files per hour per partition at default rolls: {low:.0f} at 1 event/s, "
            f"{high:.0f} at 20k events/s of 550 B"
        )
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
