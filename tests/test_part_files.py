"""Part files without Kafka: checkpoint names, torn tails, recovery, rolling, readers."""

from __future__ import annotations

import os
from pathlib import Path

from sinks.part_files import PartitionWriter, finished_files, finished_name
from sinks.reader import iter_lines, read_dataframe, read_records


def lines(*values: str) -> bytes:
    return "".join(f"{v}\n" for v in values).encode()


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_batches_checkpoint_then_finish(tmp_path: Path) -> None:
    writer = PartitionWriter(tmp_path, 2, roll_bytes=1 << 20, roll_seconds=60)
    assert writer.recover() is None
    writer.append(lines('{"a":1}', '{"a":2}'), 10, 11)
    writer.append(lines('{"a":3}'), 12, 14)  # offset 13 was a dead letter: covered, no line
    assert visible(tmp_path) == []  # in progress is hidden
    hidden = [p.name for p in tmp_path.iterdir()]
    assert hidden == [".p002-000000000010-000000000014-24.inprogress"]
    writer.finish()
    assert visible(tmp_path) == [finished_name(2, 10, 14)]
    assert list(iter_lines(tmp_path)) == [b'{"a":1}', b'{"a":2}', b'{"a":3}']


def test_roll_by_size_and_age(tmp_path: Path) -> None:
    writer = PartitionWriter(tmp_path, 0, roll_bytes=16, roll_seconds=5)
    writer.recover()
    writer.append(lines('{"a":1}'), 0, 0)  # 8 bytes
    assert visible(tmp_path) == []
    writer.append(lines('{"a":2}'), 1, 1)  # 16 bytes: rolls
    assert visible(tmp_path) == [finished_name(0, 0, 1)]
    writer.append(lines('{"a":3}'), 2, 2)
    assert not writer.due(writer._opened_at + 4.9)
    assert writer.due(writer._opened_at + 5)


def test_recovery_truncates_torn_tail_and_resumes(tmp_path: Path) -> None:
    writer = PartitionWriter(tmp_path, 1, roll_bytes=1 << 20, roll_seconds=60)
    writer.recover()
    writer.append(lines('{"a":1}'), 0, 0)
    # A crash in the middle of the next batch: bytes written, checkpoint name not yet updated.
    os.write(writer._fd, b'{"a":2}\n{"a"')  # type: ignore[arg-type]
    # Another partition's leftovers are not this writer's business.
    (tmp_path / ".p007-000000000000.new").write_bytes(b"x")
    fresh = PartitionWriter(tmp_path, 1, roll_bytes=1 << 20, roll_seconds=60)
    assert fresh.recover() == 1
    assert visible(tmp_path) == [finished_name(1, 0, 0)]
    assert list(iter_lines(tmp_path)) == [b'{"a":1}']
    assert (tmp_path / ".p007-000000000000.new").exists()


def test_recovery_drops_never_checkpointed_file(tmp_path: Path) -> None:
    (tmp_path / ".p004-000000000050.new").write_bytes(b'{"half"')
    (tmp_path / finished_name(4, 0, 49)).write_bytes(lines('{"a":1}'))
    writer = PartitionWriter(tmp_path, 4, roll_bytes=1 << 20, roll_seconds=60)
    assert writer.recover() == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == [finished_name(4, 0, 49)]


def test_readers_order_by_partition_then_offset_and_ignore_hidden(tmp_path: Path) -> None:
    (tmp_path / finished_name(1, 5, 9)).write_bytes(lines('{"p":1,"o":5}'))
    (tmp_path / finished_name(0, 10, 19)).write_bytes(lines('{"p":0,"o":10}'))
    (tmp_path / finished_name(0, 0, 9)).write_bytes(lines('{"p":0,"o":0}', '{"p":0,"o":1}'))
    (tmp_path / ".p000-000000000020-000000000021-8.inprogress").write_bytes(lines('{"x":1}'))
    (tmp_path / "notes.txt").write_text("not a part file")
    assert [f.first for f in finished_files(tmp_path)] == [0, 10, 5]
    assert [(r["p"], r["o"]) for r in read_records(tmp_path)] == [(0, 0), (0, 1), (0, 10), (1, 5)]
    frame = read_dataframe(tmp_path)
    assert list(frame.columns) == ["p", "o"] and len(frame) == 4
    assert read_dataframe(tmp_path / "missing").empty


def test_a_line_break_inside_a_value_cannot_split_a_line() -> None:
    from streams.sink import _jsonl

    assert _jsonl([b'{"a":1}', b'{"b":2}']) == b'{"a":1}\n{"b":2}\n'
    assert _jsonl([b'{"a":\n1}', b'{\r\n"b":2}']) == b'{"a": 1}\n{  "b":2}\n'
    assert _jsonl([]) == b""
