"""Parquet compaction on the bench's events: bytes on disk and read time, JSONL against Parquet.

Writes `--events` of the bench's executions (bench/workload.py, ~550 bytes each) as the
worker lays them out — `--partitions` partitions, `--hours` hour buckets, `--files` finished
JSONL files per hour and partition (12: one per `roll_seconds` of 300 s) — then runs the
compaction of `json-engine compact` on them and prints: JSONL bytes (plain, and zstd as
`compression: zstd` writes them), Parquet bytes (and without the `_line` column, to show its
share), the compaction's time, and the time of one DuckDB aggregate query and of
json-engine's own reader over each format (best of three).

    python -m bench.compaction [--events 200000] [--partitions 6] [--hours 4] [--files 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from bench.workload import murmur2_partition, payloads
from sinks.compaction.compact import compact_channel
from sinks.files.buckets import HOUR_MS, bucket_of
from sinks.files.names import finished_name
from sinks.formats.compression import compressor
from sinks.formats.parquet import LINE, load_schema
from sinks.reader import iter_lines

T0 = 1_780_000_000_000 - 1_780_000_000_000 % HOUR_MS


def write_jsonl(directory: Path, count: int, partitions: int, hours: int, files: int) -> int:
    """The worker's layout of `count` events; returns their JSONL bytes."""
    values, keys = payloads(count, seed=27)
    groups: dict[tuple[int, str], list[bytes]] = defaultdict(list)
    for i, (value, key) in enumerate(zip(values, keys, strict=True)):
        record = orjson.loads(value)
        record["timestamp"] = T0 + i * hours * HOUR_MS // count
        groups[(murmur2_partition(key or b"", partitions), bucket_of(record["timestamp"]))].append(
            orjson.dumps(record)
        )
    total, offsets = 0, defaultdict(int)
    for (partition, bucket), lines in sorted(groups.items()):
        folder = directory / bucket
        folder.mkdir(parents=True, exist_ok=True)
        size = -(-len(lines) // files)
        for start in range(0, len(lines), size):
            chunk = b"".join(line + b"\n" for line in lines[start : start + size])
            first = offsets[partition]
            last = first + len(lines[start : start + size]) - 1
            offsets[partition] = last + 1
            (folder / finished_name(partition, first, last)).write_bytes(chunk)
            total += len(chunk)
    return total


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--hours", type=int, default=4)
    parser.add_argument("--files", type=int, default=12)
    args = parser.parse_args()
    import duckdb

    with tempfile.TemporaryDirectory(prefix="json-engine-compaction-") as tmp:
        events = Path(tmp) / "events"
        plain = write_jsonl(events, args.events, args.partitions, args.hours, args.files)
        jsonl = sorted(events.rglob("*.jsonl"))
        zstd = compressor("zstd")
        assert zstd is not None
        zstd_bytes = sum(len(zstd(p.read_bytes())) for p in jsonl)
        query = "SELECT engine_id, count(*), avg(metrics.latency_ms) FROM {} GROUP BY 1"
        json_sql = query.format(f"read_json_auto('{events}/**/*.jsonl', hive_partitioning=true)")
        duck_jsonl = best_of(3, lambda: duckdb.sql(json_sql).fetchall())
        read_jsonl = best_of(3, lambda: sum(1 for _ in iter_lines(events)))

        start = time.perf_counter()
        done = compact_channel(
            events, load_schema("engine_execution"), 0, until=T0 + args.hours * HOUR_MS
        )
        compaction = time.perf_counter() - start
        parquet = sorted(events.rglob("*.parquet"))
        parquet_bytes = sum(p.stat().st_size for p in parquet)
        without_line = 0
        for p in parquet:
            table = pq.read_table(p).drop_columns([LINE])
            out = Path(tmp) / "no-line.parquet"
            pq.write_table(table, out, compression="zstd")
            without_line += out.stat().st_size
        for p in jsonl:
            p.unlink()
        pq_sql = query.format(f"read_parquet('{events}/**/*.parquet', hive_partitioning=true)")
        duck_parquet = best_of(3, lambda: duckdb.sql(pq_sql).fetchall())
        read_parquet = best_of(3, lambda: sum(1 for _ in iter_lines(events)))

    mib = 1 << 20
    print(f"{args.events} events, {len(jsonl)} JSONL files -> {done.parquet_files} Parquet files")
    print(f"JSONL plain  {plain / mib:8.1f} MiB")
    print(f"JSONL zstd   {zstd_bytes / mib:8.1f} MiB  ({plain / zstd_bytes:.1f}x smaller)")
    print(f"Parquet      {parquet_bytes / mib:8.1f} MiB  ({plain / parquet_bytes:.1f}x smaller)")
    print(f"  without _line {without_line / mib:5.1f} MiB  ({plain / without_line:.1f}x smaller)")
    print(f"compaction   {compaction:8.2f} s   ({args.events / compaction:,.0f} events/s)")
    print(f"DuckDB query JSONL {duck_jsonl:6.3f} s, Parquet {duck_parquet:6.3f} s")
    print(f"iter_lines   JSONL {read_jsonl:6.3f} s, Parquet {read_parquet:6.3f} s")


if __name__ == "__main__":
    main()
