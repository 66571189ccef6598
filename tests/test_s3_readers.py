"""Readers on S3 equal readers on the filesystem, for the same finished part files.

The same bucketed files are written to a directory and, key for key, below
`s3://bucket/prefix`; every reader (`read_records`, `read_dataframe`, time bounds, `cat`,
`aggregate --from-files`, `report`, `export`, `leaderboard`) must give the same answer from
both, and nothing hidden (`.inprogress/…`, a dot segment) may be read from either.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import yaml

from sinks.files.buckets import bucket_of
from sinks.files.names import finished_name
from sinks.reader import channel_dir, finished_files, read_dataframe, read_records
from sinks.s3.location import S3Location
from streams import events
from tests.conftest import S3Service
from tests.workers import cli

T0 = 1_764_300_000_000  # 2025-11-28 03:20 UTC
HOUR = 3_600_000
ENGINES = ["alpha", "beta", "gamma", "delta"]


def write_channel(directory: Path, records: list[dict], time_field: str) -> None:
    """Part files as the sink leaves them: per partition and hour, offsets in order."""
    by_file: dict[tuple[int, str], list[tuple[int, dict]]] = {}
    for offset, record in enumerate(records):
        partition = offset % 3
        by_file.setdefault((partition, bucket_of(record[time_field])), []).append((offset, record))
    for (partition, bucket), items in by_file.items():
        folder = directory / bucket
        folder.mkdir(parents=True, exist_ok=True)
        name = finished_name(partition, items[0][0], items[-1][0])
        (folder / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for _o, r in items))
    hidden = directory / ".inprogress"
    hidden.mkdir(exist_ok=True)
    (hidden / "p000-0000000001-000000000000-2025112803.part").write_bytes(b'{"hidden": 1}\n')


@pytest.fixture
def outputs(tmp_path: Path, s3_service: S3Service, s3_base: str) -> tuple[Path, str]:
    rng = random.Random(7)
    local = tmp_path / "out"
    execs = [events.engine_execution(rng, rng.choice(ENGINES), T0 + i * 1_700) for i in range(6000)]
    cmps = [events.comparison_result(rng, ENGINES, T0 + i * 9_000) for i in range(1000)]
    samples = [events.training_sample(rng, T0 + i * 20_000) for i in range(400)]
    write_channel(local / "events", execs, "timestamp")
    write_channel(local / "comparisons", cmps, "timestamp")
    write_channel(local / "training_samples", samples, "created_at")
    client = s3_service.client()
    remote = S3Location.parse(s3_base)
    for path in local.rglob("*"):
        if path.is_file():
            key = f"{remote.key}/{path.relative_to(local)}"
            client.put_object(Bucket=remote.bucket, Key=key, Body=path.read_bytes())
    client.put_object(Bucket=remote.bucket, Key=f"{remote.key}/events/.x/p000-1-2.jsonl", Body=b"x")
    return local, s3_base


def test_library_readers_give_the_same_records(outputs: tuple[Path, str]) -> None:
    local, remote = outputs
    for channel in ("events", "comparisons", "training_samples"):
        on_disk = read_records(local / channel)
        assert on_disk and read_records(f"{remote}/{channel}") == on_disk
    events_local, events_s3 = (
        channel_dir(local, "events.jsonl"),
        channel_dir(remote, "events.jsonl"),
    )
    assert isinstance(events_s3, S3Location)
    since, until = T0 + HOUR // 2, T0 + 2 * HOUR + 123
    bounded = read_records(events_local, since, until)
    assert 0 < len(bounded) < len(read_records(events_local))
    assert read_records(events_s3, since, until) == bounded
    # bounds list only the buckets of the range, as on disk
    assert [(p.partition, p.first, p.last) for p in finished_files(events_s3, since, until)] == [
        (p.partition, p.first, p.last) for p in finished_files(events_local, since, until)
    ]
    frame_local, frame_s3 = read_dataframe(events_local), read_dataframe(events_s3)
    assert frame_s3.equals(frame_local)


def _config(tmp_path: Path, base: str | Path) -> Path:
    path = tmp_path / f"c-{abs(hash(str(base)))}.yaml"
    path.write_text(yaml.safe_dump({"json_engine": {"output": {"base_path": str(base)}}}))
    return path


def test_command_line_readers_give_the_same_output(
    outputs: tuple[Path, str], tmp_path: Path
) -> None:
    local, remote = outputs
    for args in (
        ["aggregate", "--from-files", "{}"],
        ["aggregate", "--from-files", "{}", "--since", str(T0 + HOUR), "--window-minutes", "5"],
        ["export", "{}", "--format", "sft"],
        ["export", "{}", "--format", "dpo"],
        ["export", "{}", "--format", "chat", "--min-tier", "silver"],
        ["leaderboard", "{}", "--format", "json", "--seed", "3", "--bootstrap", "50"],
    ):
        on_disk = cli(*(str(local) if a == "{}" else a for a in args))
        on_s3 = cli(*(remote if a == "{}" else a for a in args))
        assert on_disk.returncode == 0, on_disk.stderr
        assert on_s3.returncode == 0, on_s3.stderr
        assert on_disk.stdout and on_s3.stdout == on_disk.stdout, args
    cat_local = cli("cat", "engine_execution", "--config", str(_config(tmp_path, local)))
    cat_s3 = cli("cat", "engine_execution", "--config", str(_config(tmp_path, remote)))
    assert cat_local.returncode == 0 and cat_s3.returncode == 0, cat_s3.stderr
    assert cat_s3.stdout == cat_local.stdout and len(cat_s3.stdout.splitlines()) == 6000
    assert "hidden" not in cat_s3.stdout
    cat_dir = cli("cat", "engine_execution", "--output-dir", remote, "--since", str(T0 + HOUR))
    assert cat_dir.returncode == 0 and 0 < len(cat_dir.stdout.splitlines()) < 6000
    pages = []
    for n, base in enumerate((local, remote)):
        page = tmp_path / f"report-{n}.html"
        result = cli("report", str(base), "--html", str(page), "--title", "same")
        assert result.returncode == 0, result.stderr
        pages.append(page.read_text())
    assert pages[0].count("<svg") > 0 and pages[1] == pages[0]
