"""Part files without Kafka: epochs, checkpoints, roll-forward by copy, zombies, readers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sinks.files.buckets import bucket_of
from sinks.files.names import IN_PROGRESS_DIR, finished_name
from sinks.files.part_files import PartitionWriter
from sinks.reader import finished_files, iter_lines, read_dataframe, read_records

HOUR = bucket_of(1_800_000_000_000)  # date=2027-01-15/hour=08
NEXT = bucket_of(1_800_000_000_000 + 3_600_000)


def lines(*values: str) -> bytes:
    return "".join(f"{v}\n" for v in values).encode()


def visible(directory: Path) -> list[str]:
    """Finished files below the channel directory, as bucket/name."""
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*.jsonl")
        if not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def at(bucket: str, name: str) -> str:
    return f"{bucket}/{name}"


def writer(directory: Path, partition: int = 2, epoch: int = 1, **kw: float) -> PartitionWriter:
    w = PartitionWriter(
        directory,
        partition,
        epoch,
        roll_bytes=int(kw.get("roll_bytes", 1 << 20)),
        roll_seconds=kw.get("roll_seconds", 60),
    )
    return w


def test_lines_count_only_once_committed_then_finish(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.recover([])
    w.append(lines('{"a":1}', '{"a":2}'), 10, 11, HOUR)
    w.append(lines('{"a":3}'), 12, 14, HOUR)  # offset 13 was a dead letter: covered, no line
    assert visible(tmp_path) == []  # in progress is hidden
    [checkpoint] = w.checkpoints()
    assert (checkpoint.size, checkpoint.last, checkpoint.first) == (24, 14, 10)
    assert checkpoint.bucket == HOUR
    with pytest.raises(RuntimeError, match="uncommitted"):
        w.finish()
    w.committed()
    w.finish()
    assert visible(tmp_path) == [at(HOUR, finished_name(2, 10, 14))]
    assert list(iter_lines(tmp_path)) == [b'{"a":1}', b'{"a":2}', b'{"a":3}']
    assert os.listdir(tmp_path / IN_PROGRESS_DIR) == []


def test_sync_keeps_every_byte_and_appends_after_it_continue_the_file(tmp_path: Path) -> None:
    """sync() fsyncs and drops the synced pages from the page cache but the last partial one
    (the next append writes into it): the dropped pages come back from disk intact."""
    w = writer(tmp_path)
    w.recover([])
    values = [f'{{"n":{n}}}' for n in range(3001)]
    w.append(lines(*values[:3000]), 0, 2999, HOUR)  # 31,890 bytes: not whole pages
    w.sync()
    w.append(lines(values[3000]), 3000, 3000, HOUR)
    w.sync()
    w.sync()  # nothing new: a no-op
    w.committed()
    w.finish()
    assert [line.decode() for line in iter_lines(tmp_path)] == values


def test_roll_by_size_and_age_after_commit(tmp_path: Path) -> None:
    w = writer(tmp_path, 0, roll_bytes=16, roll_seconds=5)
    w.recover([])
    w.append(lines('{"a":1}'), 0, 0, HOUR)  # 8 bytes
    w.committed()
    assert visible(tmp_path) == []
    w.append(lines('{"a":2}'), 1, 1, HOUR)  # 16 bytes: rolls once committed
    assert visible(tmp_path) == []
    w.committed()
    assert visible(tmp_path) == [at(HOUR, finished_name(0, 0, 1))]
    w.append(lines('{"a":3}'), 2, 2, HOUR)
    opened = w._open[HOUR].opened_at
    assert not w.due(opened + 10)  # uncommitted bytes never roll
    w.committed()
    assert not w.due(opened + 4.9)
    assert w.due(opened + 5)


def test_a_batch_that_straddles_an_hour_makes_one_file_per_bucket(tmp_path: Path) -> None:
    w = writer(tmp_path, 1)
    w.recover([])
    w.append(lines('{"h":8}'), 0, 0, HOUR)
    w.append(lines('{"h":9}'), 1, 1, NEXT)
    assert len(w.checkpoints()) == 2
    w.committed()  # both got lines in that checkpoint: both stay open
    assert visible(tmp_path) == []
    w.append(lines('{"h":9}'), 2, 2, NEXT)
    w.checkpoints()
    w.committed()  # no lines for the older bucket this time: it finishes; the active one stays
    assert visible(tmp_path) == [at(HOUR, finished_name(1, 0, 0))]
    w.finish()
    assert visible(tmp_path) == [at(HOUR, finished_name(1, 0, 0)), at(NEXT, finished_name(1, 1, 2))]
    assert list(iter_lines(tmp_path)) == [b'{"h":8}', b'{"h":9}', b'{"h":9}']


def test_new_owner_rolls_forward_only_the_committed_bytes(tmp_path: Path) -> None:
    old = writer(tmp_path, 1, epoch=3)
    old.recover([])
    old.append(lines('{"a":1}'), 0, 0, HOUR)
    committed = old.checkpoints()
    old.committed()
    old.append(lines('{"a":2}'), 1, 1, HOUR)  # written, never committed (the worker froze here)
    new = writer(tmp_path, 1, epoch=4)
    new.recover(committed)
    assert visible(tmp_path) == [at(HOUR, finished_name(1, 0, 0))]
    assert list(iter_lines(tmp_path)) == [b'{"a":1}']
    assert os.listdir(tmp_path / IN_PROGRESS_DIR) == []


def test_a_zombie_descriptor_never_reaches_a_finished_file(tmp_path: Path) -> None:
    zombie = writer(tmp_path, 5, epoch=1)
    zombie.recover([])
    zombie.append(lines('{"z":1}'), 0, 0, HOUR)
    committed = zombie.checkpoints()
    zombie.committed()
    writer(tmp_path, 5, epoch=2).recover(committed)  # the partition moved while it was frozen
    zombie.append(lines('{"z":2}'), 1, 1, HOUR)  # it wakes and writes on: an unlinked inode
    zombie.committed()  # (its commit would be refused; even so) its finish cannot publish
    zombie.finish()
    assert list(iter_lines(tmp_path)) == [b'{"z":1}']
    assert visible(tmp_path) == [at(HOUR, finished_name(5, 0, 0))]


def test_recovery_deletes_older_epochs_and_never_touches_newer(tmp_path: Path) -> None:
    spool = tmp_path / IN_PROGRESS_DIR
    spool.mkdir()
    (spool / "p003-0000000001-000000000000-2027011508.part").write_bytes(b'{"old"')
    (spool / "p003-0000000009-000000000050-2027011508.part").write_bytes(b'{"newer owner"')
    (spool / "p004-0000000001-000000000000-2027011508.part").write_bytes(b'{"other partition"')
    writer(tmp_path, 3, epoch=5).recover([])
    assert sorted(os.listdir(spool)) == [
        "p003-0000000009-000000000050-2027011508.part",
        "p004-0000000001-000000000000-2027011508.part",
    ]


def test_a_committed_file_already_finished_is_left_alone(tmp_path: Path) -> None:
    w = writer(tmp_path, 0, epoch=1)
    w.recover([])
    w.append(lines('{"a":1}'), 7, 7, HOUR)
    committed = w.checkpoints()
    w.committed()
    w.finish()
    writer(tmp_path, 0, epoch=2).recover(committed)
    assert visible(tmp_path) == [at(HOUR, finished_name(0, 7, 7))]


def test_a_missing_committed_file_is_an_error(tmp_path: Path) -> None:
    w = writer(tmp_path, 0, epoch=1)
    w.recover([])
    w.append(lines('{"a":1}'), 0, 0, HOUR)
    committed = w.checkpoints()
    os.unlink(tmp_path / IN_PROGRESS_DIR / committed[0].file)
    with pytest.raises(OSError, match="missing"):
        writer(tmp_path, 0, epoch=2).recover(committed)


def test_legacy_part_files_are_finished_on_upgrade(tmp_path: Path) -> None:
    (tmp_path / ".p004-000000000050-000000000051-8.inprogress").write_bytes(b'{"a":5}\n{"torn')
    (tmp_path / ".p004-000000000052.new").write_bytes(b'{"half"')
    (tmp_path / finished_name(4, 0, 49)).write_bytes(lines('{"a":1}'))
    assert writer(tmp_path, 4).recover_legacy() == 52
    assert visible(tmp_path) == [finished_name(4, 0, 49), finished_name(4, 50, 51)]
    assert list(iter_lines(tmp_path)) == [b'{"a":1}', b'{"a":5}']


def test_readers_order_by_partition_then_offset_and_ignore_hidden(tmp_path: Path) -> None:
    (tmp_path / finished_name(1, 5, 9)).write_bytes(lines('{"p":1,"o":5}'))
    (tmp_path / finished_name(0, 10, 19)).write_bytes(lines('{"p":0,"o":10}'))
    (tmp_path / finished_name(0, 0, 9)).write_bytes(lines('{"p":0,"o":0}', '{"p":0,"o":1}'))
    (tmp_path / IN_PROGRESS_DIR).mkdir()
    spool = tmp_path / IN_PROGRESS_DIR
    (spool / "p000-0000000001-000000000020-2027011508.part").write_bytes(b'{"x":1}\n')
    (tmp_path / "notes.txt").write_text("not a part file")
    assert [f.first for f in finished_files(tmp_path)] == [0, 10, 5]
    assert [(r["p"], r["o"]) for r in read_records(tmp_path)] == [(0, 0), (0, 1), (0, 10), (1, 5)]
    frame = read_dataframe(tmp_path)
    assert list(frame.columns) == ["p", "o"] and len(frame) == 4
    assert read_dataframe(tmp_path / "missing").empty


def test_a_line_break_inside_a_value_cannot_split_a_line() -> None:
    from streams.worker.sink import _jsonl

    assert _jsonl([b'{"a":1}', b'{"b":2}']) == b'{"a":1}\n{"b":2}\n'
    assert _jsonl([b'{"a":\n1}', b'{\r\n"b":2}']) == b'{"a": 1}\n{  "b":2}\n'
    assert _jsonl([]) == b""
