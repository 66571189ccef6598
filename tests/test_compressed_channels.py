"""Compressed JSONL channels (issue 27): `compression: gzip | zstd`, one member or frame per
checkpoint's append, so checkpoints, roll-forward and zombies work on bytes as before; the
readers (sinks/reader.py, `cat`, the offline commands) and DuckDB, pandas and Hugging Face
`datasets` read the finished `.jsonl.gz` / `.jsonl.zst` files.

The worker-level adversaries (SIGKILL at random instants with a watcher decompressing every
visible file, zombies, S3) are tests/test_exactly_once.py, tests/test_zombie.py and
tests/test_s3_exactly_once.py with a `compression` parameter.
"""

from __future__ import annotations

import gzip
import os
import random
import time
from pathlib import Path

import orjson
import pytest
import zstandard

from sinks.files.buckets import bucket_of
from sinks.files.names import IN_PROGRESS_DIR, finished_name
from sinks.files.part_files import PartitionWriter
from sinks.files.retention import delete_before
from sinks.formats.compression import compressor, decompress, suffix
from sinks.reader import channel_dir, finished_files, iter_lines
from streams import events
from streams.config import ChannelConfig, ConfigError, load_config
from streams.topics import create_topics
from tests.conftest import ConfigFactory, clear_engine_env
from tests.workers import WorkerProcess, cli, lines_of, produce, wait_for_lines

HOUR = bucket_of(1_800_000_000_000)


def batch(*values: str) -> bytes:
    return "".join(f"{v}\n" for v in values).encode()


def writer(directory: Path, epoch: int, codec: str) -> PartitionWriter:
    return PartitionWriter(directory, 2, epoch, 1 << 20, 60, suffix=suffix(codec))


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_each_append_is_one_frame_and_the_finished_file_reads_whole(
    tmp_path: Path, codec: str
) -> None:
    """Adversary: three appends, two checkpoints: a reader that stopped at the first frame
    or member would miss lines; any frame cut in two would not decompress."""
    pack = compressor(codec)
    assert pack is not None
    w = writer(tmp_path, 1, codec)
    w.recover([])
    w.append(pack(batch('{"a":1}', '{"a":2}')), 10, 11, HOUR)
    [first] = w.checkpoints()
    w.committed()
    w.append(pack(batch('{"a":3}')), 12, 12, HOUR)
    w.append(pack(batch('{"a":4}')), 13, 13, HOUR)
    w.checkpoints()
    w.committed()
    w.finish()
    [part] = finished_files(tmp_path)
    assert part.path.name == finished_name(2, 10, 13, suffix(codec))
    assert first.file.endswith(f"{suffix(codec)}.part")
    assert list(iter_lines(tmp_path)) == [b'{"a":1}', b'{"a":2}', b'{"a":3}', b'{"a":4}']
    opened = gzip.decompress if codec == "gzip" else _zstd_cli_like
    assert opened(part.path.read_bytes()) == batch(*(f'{{"a":{n}}}' for n in range(1, 5)))


def _zstd_cli_like(data: bytes) -> bytes:
    """What `zstd -d` does: every frame, one after the other (zstandard's frame decoder)."""
    out = b""
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        out += frame.decompress(data)
        data = frame.unused_data
    return out


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_new_owner_rolls_forward_committed_frames_only(tmp_path: Path, codec: str) -> None:
    """Adversary: the old owner appended a frame after its last committed checkpoint (a
    zombie, or a crash before the commit); and the configuration changed to no compression
    before the new owner came. The finished file holds exactly the committed frames, still
    in the codec they were written in."""
    pack = compressor(codec)
    assert pack is not None
    old = writer(tmp_path, 1, codec)
    old.recover([])
    old.append(pack(batch('{"a":1}')), 0, 0, HOUR)
    old.append(pack(batch('{"a":2}')), 1, 1, HOUR)
    committed = old.checkpoints()
    old.sync()
    old.append(pack(batch('{"never":3}')), 2, 2, HOUR)  # never committed
    old.sync()
    new = writer(tmp_path, 2, "none")
    new.recover(committed)
    [part] = finished_files(tmp_path)
    assert part.path.name == finished_name(2, 0, 1, suffix(codec))
    assert list(iter_lines(tmp_path)) == [b'{"a":1}', b'{"a":2}']
    assert not [
        n for n in os.listdir(tmp_path / IN_PROGRESS_DIR) if n.startswith("p002-0000000001")
    ]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_file_cut_inside_a_frame_is_an_error_never_fewer_lines(codec: str) -> None:
    """Adversary: bytes cut short inside the last frame or member (a copy interrupted, a
    disk that lied). zstandard's own readers stop there quietly, as if the file ended: the
    project's reader raises, as gzip does, at every cut that is not a frame's end."""
    pack = compressor(codec)
    assert pack is not None
    frames = [pack(batch(*(f'{{"n":{i}}}' for i in range(k, k + 50)))) for k in range(0, 150, 50)]
    data = b"".join(frames)
    ending = suffix(codec)
    assert decompress(data, ending).count(b"\n") == 150
    ends = {len(b"".join(frames[:n])) for n in range(len(frames) + 1)}
    for cut in range(1, len(data)):
        if cut in ends:
            assert decompress(data[:cut], ending).count(b"\n") % 50 == 0
            continue
        with pytest.raises((EOFError, OSError, zstandard.ZstdError)):
            decompress(data[:cut], ending)


def test_validate_reads_compressed_inputs_and_refuses_a_cut_one(tmp_path: Path) -> None:
    """Adversary: `validate` (and `publish`, the same reader) given a channel's compressed
    files, and one cut short: every line is checked, and the cut file is a clear error."""
    rng = random.Random(3)
    docs = [events.engine_execution(rng, "e1", 1_800_000_000_000 + i) for i in range(20)]
    data = b"".join(orjson.dumps(d) + b"\n" for d in docs) + b'{"broken": 1}\n'
    zst = compressor("zstd")
    assert zst is not None
    (tmp_path / "ok.jsonl.zst").write_bytes(zst(data[:900]) + zst(data[900:]))
    (tmp_path / "cut.jsonl.zst").write_bytes(zst(data)[:-7])
    done = cli("validate", "--type", "engine_execution", str(tmp_path / "ok.jsonl.zst"))
    assert done.returncode == 1 and "20 valid, 1 invalid" in done.stdout + done.stderr
    cut = cli("validate", "--type", "engine_execution", str(tmp_path / "cut.jsonl.zst"))
    assert cut.returncode == 1 and "cut short" in cut.stderr, cut.stderr


def test_a_compression_level_the_codec_has_not_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="compression_level 30 does not fit compression zstd"):
        ChannelConfig(filename="events.jsonl", compression="zstd", compression_level=30)
    with pytest.raises(ValueError, match="compression_level 3 does not fit compression none"):
        ChannelConfig(filename="events.jsonl", compression_level=3)
    assert ChannelConfig(filename="e.jsonl", compression="gzip", compression_level=9)


def test_an_unknown_codec_in_the_environment_names_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_engine_env(monkeypatch)
    monkeypatch.delenv("JSON_ENGINE_CONFIG", raising=False)
    monkeypatch.setenv("JSON_ENGINE__CHANNELS__ENGINE_EXECUTION__COMPRESSION", "lz4")
    with pytest.raises(ConfigError, match=r"channels\.engine_execution\.compression"):
        load_config()


# -- a real worker, and what reads its files ------------------------------------------------


@pytest.mark.slow
def test_duckdb_pandas_datasets_and_cat_read_compressed_channels(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adversary: files of many checkpoints (many frames and members each), in two codecs,
    read by tools that know nothing of json-engine. Each returns exactly the records the
    worker was given, once: DuckDB's read_json_auto over `**/*.jsonl.zst` with hive
    partitioning, pandas, `datasets.load_dataset("json")`, `json-engine cat`, and the
    offline `aggregate --from-files`."""
    fast = {"auto_flush_seconds": 0.1, "buffer_size": 200, "roll_seconds": 3}
    path, cfg = make_config(
        {
            "channels": {
                "engine_execution": {**fast, "compression": "zstd"},
                "dead_letter": {**fast, "compression": "gzip"},
            }
        }
    )
    create_topics(cfg)
    rng = random.Random(27)
    now = int(time.time() * 1000)
    execs = [events.engine_execution(rng, f"e{i % 4}", now + i) for i in range(3000)]
    bad = [f'{{"broken": {i}'.encode() for i in range(30)]
    worker = WorkerProcess(path, tmp_path).start()
    try:
        for start in range(0, len(execs), 500):  # many checkpoints: many frames per file
            produce(cfg, "engine-execution", [orjson.dumps(e) for e in execs[start : start + 500]])
            time.sleep(0.2)
        produce(cfg, "engine-execution", bad)
        wait_for_lines(cfg, "engine_execution", len(execs), timeout=90)
        wait_for_lines(cfg, "dead_letter", len(bad), timeout=60)
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.kill()
    events_dir = channel_dir(cfg.output.base_path, "events.jsonl")
    rejected_dir = channel_dir(cfg.output.base_path, "rejected.jsonl")
    assert all(p.path.name.endswith(".jsonl.zst") for p in finished_files(events_dir))
    assert all(p.path.name.endswith(".jsonl.gz") for p in finished_files(rejected_dir))
    want = sorted(e["trace_id"] for e in execs)
    assert (
        sorted(orjson.loads(line)["trace_id"] for line in lines_of(cfg, "engine_execution")) == want
    )

    import duckdb

    rows = duckdb.sql(
        f"SELECT trace_id::VARCHAR, metrics.latency_ms AS latency, hour FROM read_json_auto("
        f"'{events_dir}/**/*.jsonl.zst', hive_partitioning = true)"
    ).fetchall()
    assert sorted(r[0] for r in rows) == want
    latency = {e["trace_id"]: e["metrics"]["latency_ms"] for e in execs}
    assert all(r[1] == latency[r[0]] for r in rows)
    letters = duckdb.sql(
        f"SELECT reason FROM read_json_auto('{rejected_dir}/**/*.jsonl.gz')"
    ).fetchall()
    assert [r[0] for r in letters] == ["invalid_json"] * len(bad)

    import pandas as pd

    frame = pd.concat(
        pd.read_json(p.path, lines=True, compression="zstd") for p in finished_files(events_dir)
    )
    assert sorted(frame["trace_id"]) == want

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets

    dataset = datasets.load_dataset(
        "json", data_files=str(events_dir / "**/*.jsonl.zst"), split="train"
    )
    assert sorted(dataset["trace_id"]) == want

    shown = cli("cat", "engine_execution", "--config", str(path))
    assert shown.returncode == 0, shown.stderr
    assert sorted(orjson.loads(line)["trace_id"] for line in shown.stdout.splitlines()) == want

    # an offline command: the batch twin counts every execution once, per engine
    stats = cli("aggregate", "--from-files", str(cfg.output.base_path), "--config", str(path))
    assert stats.returncode == 0, stats.stderr
    per_engine: dict[str, int] = {}
    for line in stats.stdout.splitlines():
        record = orjson.loads(line)
        per_engine[record["engine_id"]] = per_engine.get(record["engine_id"], 0) + record["count"]
    assert per_engine == {
        f"e{k}": sum(1 for i in range(len(execs)) if i % 4 == k) for k in range(4)
    }


def test_retention_deletes_compressed_files_of_expired_buckets(tmp_path: Path) -> None:
    """Adversary: retention that knew only `.jsonl` would keep compressed files forever (and
    their bucket folders). Both codecs' files of an expired bucket go; a newer bucket stays."""
    old, new = bucket_of(1_700_000_000_000), bucket_of(1_800_000_000_000)
    for n, codec in enumerate(("gzip", "zstd")):
        pack = compressor(codec)
        assert pack is not None
        w = writer(tmp_path, 1 + n, codec)
        w.recover([])
        w.append(pack(batch('{"a":1}')), 10 * n, 10 * n, old)
        w.append(pack(batch('{"a":2}')), 10 * n + 1, 10 * n + 1, new)
        w.checkpoints()
        w.committed()
        w.finish()
    assert len(finished_files(tmp_path)) == 4
    assert delete_before(tmp_path, 1_750_000_000_000) == 2
    assert {
        p.path.parent.parent.name + "/" + p.path.parent.name for p in finished_files(tmp_path)
    } == {new}
    assert not (tmp_path / old).exists()
