"""atomic_write / atomic_append: readers see old or new content, never a torn or temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sinks import atomic
from sinks.atomic import atomic_append, atomic_write


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_creates_then_replaces_whole_content(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b'{"a": 1}\n')
    atomic_write(target, b"{}\n")
    assert target.read_bytes() == b"{}\n"
    assert visible(tmp_path) == ["state.json"]


def test_append_is_old_content_plus_data(tmp_path: Path) -> None:
    target = tmp_path / "events.jsonl"
    atomic_append(target, b'{"n": 1}\n')  # a missing file counts as empty
    atomic_append(target, b'{"n": 2}\n')
    assert target.read_bytes() == b'{"n": 1}\n{"n": 2}\n'
    assert visible(tmp_path) == ["events.jsonl"]


def test_append_copies_more_than_one_chunk(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    old = os.urandom(atomic.CHUNK_BYTES + 123)
    target.write_bytes(old)
    atomic_append(target, b"tail")
    assert target.read_bytes() == old + b"tail"


def test_append_publishes_by_rename_so_open_readers_keep_old_content(tmp_path: Path) -> None:
    target = tmp_path / "log.jsonl"
    target.write_bytes(b"old\n")
    with target.open("rb") as reader:
        atomic_append(target, b"new\n")
        assert reader.read() == b"old\n"
    assert target.read_bytes() == b"old\nnew\n"


@pytest.mark.parametrize("helper", [atomic_write, atomic_append])
def test_replaced_file_keeps_its_permissions(tmp_path: Path, helper) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"x")
    target.chmod(0o640)
    helper(target, b"y")
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("helper", [atomic_write, atomic_append])
def test_failed_rename_leaves_old_content_and_no_temp(
    tmp_path: Path, helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.jsonl"
    target.write_bytes(b"old\n")

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        helper(target, b"new\n")
    assert target.read_bytes() == b"old\n"
    assert visible(tmp_path) == ["f.jsonl"]


@pytest.mark.parametrize("helper", [atomic_write, atomic_append])
def test_file_and_directory_are_fsynced_before_and_after_rename(
    tmp_path: Path, helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    helper(tmp_path / "f", b"data")
    assert events == ["fsync-file", "rename", "fsync-dir"]
