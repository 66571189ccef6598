"""The S3 part-object writer on its own, against a real S3 server (no Kafka): what a
committed checkpoint names is what a new owner publishes, from the packs alone (or from the
per-file part objects of the version before packs); a zombie's packs are never counted past
the committed sizes and its publications never replace a key; retention deletes old buckets'
objects only."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sinks.files.names import Checkpoint
from sinks.reader import read_records
from sinks.s3.location import S3Location
from sinks.s3.part_objects import S3PartitionWriter
from sinks.s3.retention import delete_before
from sinks.s3.store import store_of
from tests.conftest import S3Service

BUCKET = "date=2026-12-01/hour=08"
OLD = "date=2026-11-01/hour=08"


def lines(*ids: int) -> bytes:
    return b"".join(b'{"id": %d, "timestamp": 1796112000000}\n' % i for i in ids)


def keys(where: S3Location) -> dict[str, str]:
    store = store_of(where)
    return {k[len(where.prefix) :]: str(s) for k, s in store.list(where)}


@pytest.fixture
def channel(s3_base: str, s3_service: S3Service) -> S3Location:
    return S3Location.parse(s3_base) / "events"


def test_a_new_owner_publishes_the_committed_parts_and_a_zombie_changes_nothing(
    channel: S3Location,
) -> None:
    zombie = S3PartitionWriter(channel, 3, 7, roll_bytes=1 << 30, roll_seconds=3600)
    zombie.recover([])
    zombie.append(lines(100, 101), 100, 101, BUCKET)
    zombie.sync()
    zombie.append(lines(102), 102, 102, BUCKET)
    zombie.sync()
    (committed,) = zombie.checkpoints()  # what the (fenced) transaction committed
    zombie.committed()
    zombie.append(lines(103, 104), 103, 104, BUCKET)  # after the commit: never committed
    zombie.sync()
    hidden = [k for k in keys(channel) if k.startswith(".inprogress/p003-0000000007/")]
    assert len(hidden) == 3  # three packs of epoch 7

    owner = S3PartitionWriter(channel, 3, 8, roll_bytes=1 << 30, roll_seconds=3600)
    owner.recover([committed])  # a new process: no spool, the packs alone
    assert [r["id"] for r in read_records(channel)] == [100, 101, 102]
    assert not [k for k in keys(channel) if k.startswith(".inprogress/")], "older epoch left"
    published = keys(channel)
    # The zombie thaws with uncommitted bytes: it can never publish them...
    with pytest.raises(RuntimeError, match="uncommitted"):
        zombie.finish()
    # ...and a conditional PUT of a published key, whatever its bytes, replaces nothing.
    (key,) = [k for k in published if k.endswith(".jsonl")]
    assert store_of(channel).put_new(channel / key, lines(100, 101, 102, 103, 104)) is False
    assert [r["id"] for r in read_records(channel)] == [100, 101, 102]
    assert keys(channel) == published
    # A second recovery of the same checkpoint (the owner died right after) changes nothing.
    again = S3PartitionWriter(channel, 3, 9, roll_bytes=1 << 30, roll_seconds=3600)
    again.recover([committed])
    assert [r["id"] for r in read_records(channel)] == [100, 101, 102]


def test_a_pack_of_batches_alternating_between_files_is_read_back_from_the_spool(
    channel: S3Location,
) -> None:
    """Adversary: one checkpoint's batches alternate between two buckets' files (an hour
    turning over mid-batch), several in a row to the same file. The pack is built from the
    spool files at the checkpoint, not from batches kept in memory: consecutive batches of one
    file make one piece, and a new owner rebuilds each file's bytes, in order, from the pack
    alone."""
    writer = S3PartitionWriter(channel, 5, 7, roll_bytes=1 << 30, roll_seconds=3600)
    writer.recover([])
    order = [BUCKET, BUCKET, OLD, OLD, OLD, BUCKET, OLD, BUCKET, BUCKET]
    for offset, bucket in enumerate(order):
        writer.append(lines(offset), offset, offset, bucket)
    assert [(bucket, length) for bucket, _offset, length in writer._pieces] == [
        (writer._open[b].name, len(lines(0)) * n) for b, n in [(BUCKET, 2), (OLD, 3)]
    ] + [(writer._open[b].name, len(lines(0))) for b in (BUCKET, OLD)] + [
        (writer._open[BUCKET].name, len(lines(0)) * 2)
    ], "each run of one file's batches is one piece, holding lengths, not bytes"
    committed = writer.checkpoints()
    writer.sync()
    owner = S3PartitionWriter(channel, 5, 8, roll_bytes=1 << 30, roll_seconds=3600)
    owner.recover(committed)  # no spool: the pack alone
    got = sorted(r["id"] for r in read_records(channel))
    assert got == list(range(len(order)))
    store = store_of(channel)
    by_file = {
        key: [orjson.loads(line)["id"] for line in store.get(channel / key).splitlines()]
        for key in keys(channel)
        if key.endswith(".jsonl")
    }
    assert sorted(by_file.values()) == sorted(
        [[n for n, b in enumerate(order) if b == bucket] for bucket in (BUCKET, OLD)]
    )


def test_a_file_a_version_before_packs_committed_is_published_from_its_own_parts(
    channel: S3Location,
) -> None:
    name = "p004-0000000005-000000000010-2026120108.part"  # its parts as that version wrote them
    store = store_of(channel)
    store.put_new(channel / f".inprogress/{name[:-5]}/000000.part", lines(10, 11))
    store.put_new(channel / f".inprogress/{name[:-5]}/000001.part", lines(12))
    store.put_new(channel / f".inprogress/{name[:-5]}/000002.part", lines(13))  # uncommitted
    committed = Checkpoint(name, len(lines(10, 11, 12)), 12)
    S3PartitionWriter(channel, 4, 6, roll_bytes=1 << 30, roll_seconds=3600).recover([committed])
    assert [r["id"] for r in read_records(channel)] == [10, 11, 12]
    assert not [k for k in keys(channel) if k.startswith(".inprogress/")]


def test_committed_parts_that_are_gone_are_an_error_unless_published(
    channel: S3Location,
) -> None:
    owner = S3PartitionWriter(channel, 0, 2, roll_bytes=1 << 30, roll_seconds=3600)
    with pytest.raises(OSError, match="do not hold its 50 bytes"):
        owner.recover([Checkpoint("p000-0000000001-000000000010-2026120108.part", 50, 12)])


def test_retention_deletes_old_buckets_but_not_one_still_written(
    channel: S3Location, tmp_path: Path
) -> None:
    store = store_of(channel)
    store.put_new(channel / OLD / "p000-000000000000-000000000001.jsonl", lines(1, 2))
    store.put_new(channel / BUCKET / "p000-000000000002-000000000002.jsonl", lines(3))
    busy = "date=2026-11-02/hour=00"
    store.put_new(channel / busy / "p001-000000000000-000000000000.jsonl", lines(4))
    store.put_new(channel / ".inprogress/p001-0000000003-000000000001-2026110200/000000.part", b"x")
    cutoff = 1796112000000  # 2026-12-01 08:00 UTC
    assert delete_before(channel, cutoff) == 1
    left = sorted(keys(channel))
    assert left == [
        ".inprogress/p001-0000000003-000000000001-2026110200/000000.part",
        f"{busy}/p001-000000000000-000000000000.jsonl",
        f"{BUCKET}/p000-000000000002-000000000002.jsonl",
    ]


def test_recovery_aborts_multipart_uploads_left_below_the_partition(
    channel: S3Location,
) -> None:
    client = store_of(channel).client
    hidden = channel / ".inprogress/p005-0000000001-000000000000-2026120108/big.part"
    other = channel / ".inprogress/p006-0000000001-000000000000-2026120108/big.part"
    for where in (hidden, other):
        client.create_multipart_upload(Bucket=where.bucket, Key=where.key)
    S3PartitionWriter(channel, 5, 2, roll_bytes=1 << 30, roll_seconds=3600).recover([])
    left = client.list_multipart_uploads(Bucket=channel.bucket, Prefix=channel.prefix)
    assert [u["Key"] for u in left.get("Uploads", [])] == [other.key]  # only its own partition
