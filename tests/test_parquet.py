"""Parquet compaction (`json-engine compact`, sinks/compaction/, sinks/formats/parquet.py).

What must hold: closed buckets become one Parquet file per bucket and partition, typed by
the JSON Schema with a producer's extra fields kept; every reader returns exactly the lines
of the JSONL files, before, during and after the switch, whoever is killed when; late records
still arrive; DuckDB, pandas, pyarrow datasets and Hugging Face datasets read the channel.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sinks.compaction.compact import compact_channel
from sinks.files.buckets import HOUR_MS, bucket_of
from sinks.files.names import finished_name
from sinks.formats.compression import compressor
from sinks.formats.parquet import load_schema
from sinks.reader import channel_dir, finished_files, iter_lines, part_lines
from sinks.s3.location import S3Location
from sinks.s3.store import store_of
from streams import events
from streams.topics import create_topics
from tests.conftest import ConfigFactory
from tests.workers import WorkerProcess, cli, produce, wait_for_lines

T0 = 1_780_000_000_000 - 1_780_000_000_000 % HOUR_MS  # an hour's start, 2026-05-28
SCHEMA = load_schema("engine_execution")


def write_channel(
    directory: Path,
    hours: int,
    partitions: int = 2,
    files_per_hour: int = 3,
    lines_per_file: int = 40,
    seed: int = 27,
) -> list[bytes]:
    """Finished JSONL files as the worker writes them (names from offsets, bucket folders
    by event time), in `hours` hours from T0; returns every line written."""
    rng = random.Random(seed)
    written = []
    for partition in range(partitions):
        offset = 0
        for hour in range(hours):
            folder = directory / bucket_of(T0 + hour * HOUR_MS)
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(files_per_hour):
                lines = []
                for i in range(lines_per_file):
                    ts = T0 + hour * HOUR_MS + rng.randrange(HOUR_MS)
                    record = events.engine_execution(rng, f"e{i % 5}", ts)
                    lines.append(orjson.dumps(record))
                first, last = offset, offset + lines_per_file + 3  # gaps: markers, letters
                offset = last + 1
                (folder / finished_name(partition, first, last)).write_bytes(
                    b"".join(line + b"\n" for line in lines)
                )
                written += lines
    return written


def keys_of(records: list[dict]) -> list[bytes | None]:
    """Distinct keys: murmur2 spreads the records over every partition."""
    return [r["trace_id"].encode() for r in records]


def count_formats(directory: Path) -> Counter[str]:
    return Counter(p.suffix for p in directory.rglob("p*") if not p.name.startswith("."))


def test_closed_buckets_become_typed_parquet_that_keeps_every_line_and_extra_field(
    tmp_path: Path,
) -> None:
    """Adversary: a producer's own fields (top level and inside the open `metrics`), a value
    of the wrong type (a channel with validation off), a zstd file among plain ones, and
    hours still open. Only the closed
    hours become Parquet; its columns follow the schema (struct, timestamp[ms]); nothing a
    producer wrote is dropped; every reader returns the same lines as before."""
    events_dir = tmp_path / "events"
    lines = write_channel(events_dir, hours=4)
    odd = {**orjson.loads(lines[0]), "tenant": "acme", "timestamp": T0 + 5}
    odd["metrics"] = {**odd["metrics"], "gpu": "h100", "latency_ms": "slow"}
    folder = events_dir / bucket_of(T0)
    zstd = compressor("zstd")  # a compressed channel's file (its codec changed meanwhile)
    assert zstd is not None
    (folder / finished_name(0, 900_000, 900_000, ".zst")).write_bytes(
        zstd(orjson.dumps(odd) + b"\n")
    )
    lines.append(orjson.dumps(odd))
    before = list(iter_lines(events_dir))
    assert sorted(before) == sorted(lines)
    p0h0 = [
        line
        for part in finished_files(events_dir)
        if part.partition == 0 and part.path.parent == folder
        for line in part_lines(part)
    ]

    done = compact_channel(events_dir, SCHEMA, grace_ms=HOUR_MS, delete_jsonl=True)
    # newest hour of each partition is T0+3h: hours 0 and 1 ended >= 1h before it
    assert done.parquet_files == 4, done
    compacted = Counter(
        str(p.parent.relative_to(events_dir)) for p in events_dir.rglob("*.parquet")
    )
    assert compacted == {bucket_of(T0): 2, bucket_of(T0 + HOUR_MS): 2}
    assert not list(folder.glob("*.jsonl*"))
    # the same lines in the same order: each JSONL file's rows at its own first offset
    assert list(iter_lines(events_dir)) == before

    table = pq.read_table(folder / "p000-000000000000-000000900000.parquet")
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert pa.types.is_struct(table.schema.field("metrics").type)
    rows = table.to_pylist()
    assert [r["_line"].encode() for r in rows] == p0h0  # every line, in offset order
    last = rows[-1]
    assert orjson.loads(last["_extra"]) == {"tenant": "acme"}
    assert orjson.loads(last["metrics"]["_extra"]) == {"gpu": "h100"}
    assert last["metrics"]["latency_ms"] is None  # did not fit its type: kept in _line only
    assert orjson.loads(last["_line"]) == odd
    assert rows[0]["timestamp"].timestamp() * 1000 == orjson.loads(rows[0]["_line"])["timestamp"]

    again = compact_channel(events_dir, SCHEMA, grace_ms=HOUR_MS, delete_jsonl=True)
    assert again.parquet_files == 0 and again.jsonl_removed == 0  # idempotent
    assert list(iter_lines(events_dir)) == before


def test_the_config_says_whether_jsonl_goes_and_a_flag_overrides_it(tmp_path: Path) -> None:
    """Adversary: `output.compaction` asking to delete with a grace of 0 hours, then
    `--keep-jsonl` on the command line: the flag wins; without it the config does."""
    output = tmp_path / "output"
    write_channel(output / "events", hours=3)
    before = list(iter_lines(output / "events"))
    config = tmp_path / "c.yaml"
    config.write_text(
        "json_engine:\n  output:\n    compaction: {delete_jsonl: true, grace_hours: 0}\n"
    )
    args = ["compact", str(output), "--config", str(config), "--channel", "engine_execution"]
    kept = cli(*args, "--keep-jsonl")
    assert kept.returncode == 0, kept.stderr
    assert "4 Parquet files" in kept.stdout  # hours 0 and 1: ended before hour 2 began
    assert count_formats(output / "events") == Counter({".jsonl": 18, ".parquet": 4})
    assert list(iter_lines(output / "events")) == before
    removed = cli(*args)
    assert "0 Parquet files, 0 rows, 12 JSONL files removed" in removed.stdout, removed.stdout
    assert count_formats(output / "events") == Counter({".jsonl": 6, ".parquet": 4})
    assert list(iter_lines(output / "events")) == before


def test_duckdb_pandas_pyarrow_and_datasets_read_a_compacted_channel_with_hive_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adversary: tools that know nothing of json-engine, over a channel of Parquet files
    (the JSONL removed). Each returns every record once, with `date`/`hour` from the folders."""
    events_dir = tmp_path / "events"
    lines = write_channel(events_dir, hours=3)
    compact_channel(events_dir, SCHEMA, grace_ms=0, until=T0 + 3 * HOUR_MS, delete_jsonl=True)
    assert count_formats(events_dir) == Counter({".parquet": 6})
    want = sorted(orjson.loads(line)["trace_id"] for line in lines)
    glob = f"{events_dir}/**/*.parquet"

    import duckdb

    rows = duckdb.sql(
        f"SELECT trace_id, metrics.latency_ms, date, hour, epoch_ms(timestamp) "
        f"FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()
    assert sorted(r[0] for r in rows) == want
    by_id = {r["trace_id"]: r for r in map(orjson.loads, lines)}
    assert all(r[1] == by_id[r[0]]["metrics"]["latency_ms"] for r in rows)
    assert all(r[4] == by_id[r[0]]["timestamp"] for r in rows)
    assert all(bucket_of(r[4]) == f"date={r[2]}/hour={int(r[3]):02d}" for r in rows)

    import pandas as pd
    import pyarrow.dataset as ds

    dataset = ds.dataset(events_dir, format="parquet", partitioning="hive")
    assert sorted(dataset.to_table(columns=["trace_id"]).column(0).to_pylist()) == want
    frame = pd.read_parquet(events_dir)  # pyarrow under pandas: hive folders become columns
    assert sorted(frame["trace_id"]) == want and {"date", "hour"} <= set(frame.columns)

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets

    loaded = datasets.load_dataset("parquet", data_files=glob, split="train")
    assert sorted(loaded["trace_id"]) == want


def test_a_reader_that_listed_before_the_switch_still_reads_every_line_once(
    tmp_path: Path,
) -> None:
    """Adversary: a reader that listed the JSONL files, then compaction with --delete-jsonl,
    then the reader opens them; and a reader halfway through a file when it is removed."""
    events_dir = tmp_path / "events"
    write_channel(events_dir, hours=2)
    before = list(iter_lines(events_dir))
    listed = finished_files(events_dir)
    assert all(not p.is_parquet for p in listed)
    reading = iter_lines(events_dir)
    head = [next(reading) for _ in range(10)]  # one file open, read in part
    compact_channel(events_dir, SCHEMA, grace_ms=0, until=T0 + 2 * HOUR_MS, delete_jsonl=True)
    assert count_formats(events_dir) == Counter({".parquet": 4})
    assert [line for part in listed for line in part_lines(part)] == before
    assert head + list(reading) == before


def test_readers_racing_a_compactor_process_see_each_line_once(tmp_path: Path) -> None:
    """Adversary: `json-engine compact --delete-jsonl` in its own process, bucket after
    bucket, while readers list and read over and over: at no instant may a line be missing
    or doubled (a Parquet file published mid-listing, JSONL removed mid-read)."""
    events_dir = tmp_path / "output" / "events"
    write_channel(events_dir, hours=12, partitions=3, files_per_hour=4, lines_per_file=30)
    order = list(iter_lines(events_dir))
    want = Counter(order)
    stop = threading.Event()
    results: list[str] = []

    def read_loop() -> None:
        while not stop.is_set():
            got = list(iter_lines(events_dir))
            if got == order:
                results.append("ok")
                continue
            got = Counter(got)
            missing, extra = sum((want - got).values()), sum((got - want).values())
            results.append(f"{missing} missing, {extra} extra" if missing or extra else "order")

    readers = [threading.Thread(target=read_loop) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for hour in range(2, 13, 2):  # two more hours close per run: switches while read
            until = str(T0 + hour * HOUR_MS)
            run = cli(
                "compact",
                str(events_dir.parent),
                "--channel",
                "engine_execution",
                "--until",
                until,
                "--delete-jsonl",
            )
            assert run.returncode == 0, run.stderr
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert count_formats(events_dir) == Counter({".parquet": 36})
    assert len(results) >= 4 and set(results) == {"ok"}, Counter(results)
    assert Counter(iter_lines(events_dir)) == want


def test_sigkill_of_compact_at_random_instants_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """Adversary: SIGKILL of `json-engine compact --delete-jsonl` at random instants of its
    run (while it imports, reads, writes a temp file, links, removes JSONL), each on a fresh
    copy of one channel. After each kill the readers return exactly the lines, in order;
    a second run completes the work."""
    original = tmp_path / "original"
    write_channel(original / "events", hours=10, partitions=3, files_per_hour=6, lines_per_file=200)
    order = list(iter_lines(original / "events"))

    def run(output: Path) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "streams.cli",
            "compact",
            str(output),
            "--channel",
            "engine_execution",
            "--until",
            str(T0 + 10 * HOUR_MS),
            "--delete-jsonl",
        ]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    (tmp_path / "empty").mkdir()
    start = time.monotonic()
    assert run(tmp_path / "empty").wait(60) == 0
    started = time.monotonic() - start  # the command's start-up alone
    shutil.copytree(original, tmp_path / "probe")
    start = time.monotonic()
    assert run(tmp_path / "probe").wait(60) == 0
    whole = time.monotonic() - start  # one uninterrupted run
    rng = random.Random(int(os.environ.get("JSON_ENGINE_TEST_SEED", "27")))
    # Instants are spread over the run in strata, so kills land early and late alike; a
    # trial whose run ended before its instant (a loaded machine runs unevenly) does not
    # count, and another trial takes its place.
    strata, wanted, kills, halfway, trial = 6, 4, 0, 0, 0
    while (kills < wanted or not halfway) and trial < 3 * strata:
        output = tmp_path / f"trial-{trial}"
        shutil.copytree(original, output)
        stratum = (trial % strata + rng.random()) / strata
        trial += 1
        proc = run(output)
        time.sleep(0.5 * started + stratum * (0.9 * whole - 0.5 * started))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
        assert list(iter_lines(output / "events")) == order
        halfway += count_formats(output / "events").keys() == {".jsonl", ".parquet"}
        assert run(output).wait(60) == 0
        assert count_formats(output / "events") == Counter({".parquet": 30})
        assert list(iter_lines(output / "events")) == order
    assert kills >= wanted and halfway >= 1, (kills, halfway, trial, started, whole)


def test_s3_compaction_publishes_parquet_and_readers_switch_without_loss(s3_base: str) -> None:
    """Adversary: the same switch on S3 (the project's versitygw): a reader that listed the
    JSONL objects before `compact --delete-jsonl` reads them after they are deleted, from the
    Parquet object; a second run changes nothing (conditional PUT)."""
    base = S3Location.parse(s3_base)
    events_dir = base / "events"
    store = store_of(events_dir)
    rng = random.Random(5)
    written = []
    for partition in range(2):
        for hour in range(3):
            lines = [
                orjson.dumps(events.engine_execution(rng, "e1", T0 + hour * HOUR_MS + i))
                for i in range(25)
            ]
            key = (
                events_dir
                / bucket_of(T0 + hour * HOUR_MS)
                / finished_name(partition, hour * 100, hour * 100 + 30)
            )
            assert store.put_new(key, b"".join(line + b"\n" for line in lines))
            written += lines
    before = list(iter_lines(events_dir))
    assert sorted(before) == sorted(written)
    listed = finished_files(events_dir)
    run = cli(
        "compact", s3_base, "--channel", "engine_execution", "--grace-hours", "1", "--delete-jsonl"
    )
    assert run.returncode == 0, run.stderr
    assert "2 Parquet files" in run.stdout  # hour 0 of each partition: hour 1 is still open
    keys = sorted(k.rsplit("/", 1)[-1] for k, _ in store.list(events_dir))
    assert keys.count("p000-000000000000-000000000030.parquet") == 1
    assert "p000-000000000000-000000000030.jsonl" not in keys
    assert [line for part in listed for line in part_lines(part)] == before
    assert list(iter_lines(events_dir)) == before
    again = cli("compact", s3_base, "--channel", "engine_execution", "--grace-hours", "1")
    assert "0 Parquet files" in again.stdout, again.stdout
    assert list(iter_lines(events_dir)) == before


@pytest.mark.slow
def test_compaction_racing_late_records_from_a_real_worker(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adversary: a real worker on a real broker keeps writing late records into hours that
    `compact --delete-jsonl` compacts at the same time. Every record is read exactly once
    while it runs and after; the late ones land in new JSONL files past the Parquet's
    offsets, and a later run compacts them into a second Parquet file."""
    fast = {"auto_flush_seconds": 0.1, "buffer_size": 200, "roll_seconds": 0.5}
    path, cfg = make_config({"channels": {"engine_execution": fast}})
    create_topics(cfg)
    rng = random.Random(31)
    old = [events.engine_execution(rng, "e1", T0 + i * 1000) for i in range(600)]
    new = [events.engine_execution(rng, "e2", T0 + 5 * HOUR_MS + i) for i in range(60)]
    worker = WorkerProcess(path, tmp_path).start()
    events_dir = channel_dir(cfg.output.base_path, cfg.channels.engine_execution.filename)
    sent = old + new

    def compact() -> subprocess.CompletedProcess[str]:
        base = str(cfg.output.base_path)
        channel = ("--channel", "engine_execution")
        return cli("compact", base, "--config", str(path), *channel, "--delete-jsonl")

    try:
        produce(cfg, "engine-execution", [orjson.dumps(e) for e in sent], keys_of(sent))
        wait_for_lines(cfg, "engine_execution", len(sent), timeout=90)
        late: list[dict] = []
        stop = threading.Event()

        def keep_sending() -> None:
            while not stop.is_set():
                batch = [
                    events.engine_execution(rng, "e3", T0 + rng.randrange(HOUR_MS))
                    for _ in range(40)
                ]
                produce(cfg, "engine-execution", [orjson.dumps(e) for e in batch], keys_of(batch))
                late.extend(batch)
                time.sleep(0.2)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            for _ in range(4):
                run = compact()
                assert run.returncode == 0, run.stderr
                ids = [orjson.loads(line)["trace_id"] for line in iter_lines(events_dir)]
                assert len(ids) == len(set(ids)), "a record read twice during the switch"
        finally:
            stop.set()
            sender.join()
        sent += late
        lines = wait_for_lines(cfg, "engine_execution", len(sent), timeout=90)
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    assert sorted(orjson.loads(x)["trace_id"] for x in lines) == sorted(e["trace_id"] for e in sent)
    run = compact()
    assert run.returncode == 0, run.stderr
    hour0 = events_dir / bucket_of(T0)
    parquet = Counter(int(p.name[1:4]) for p in hour0.glob("*.parquet"))
    assert not list(hour0.glob("*.jsonl")) and set(parquet) == {0, 1, 2}
    assert max(parquet.values()) >= 2, parquet  # late records: a later, second Parquet file
    ids = [orjson.loads(x)["trace_id"] for x in iter_lines(events_dir)]
    assert sorted(ids) == sorted(e["trace_id"] for e in sent)
    shown = cli("cat", "engine_execution", "--config", str(path))
    assert sorted(orjson.loads(x)["trace_id"] for x in shown.stdout.splitlines()) == sorted(ids)
