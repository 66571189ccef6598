"""Part files of one Kafka partition: in-progress → finished, names derived from offsets.

The lifecycle is Flink FileSink's; the names are Kafka Connect S3's. For partition 3:

    .p003-000000000100-000000000599-48211.inprogress   hidden, still growing
    p003-000000000100-000000000599.jsonl               finished: whole, never rewritten

The in-progress name *is* the checkpoint: after each batch is written and fsynced, the file
is renamed to carry the last offset and the byte length that are durable, and the directory
is fsynced. A crash can leave bytes past that length (a torn batch); recovery truncates them,
finishes the file and resumes from the next offset. A replay rewrites the same names.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sinks.atomic import fsync_dir

FINISHED = re.compile(r"^p(\d+)-(\d+)-(\d+)\.jsonl$")
IN_PROGRESS = re.compile(r"^\.p(\d+)-(\d+)-(\d+)-(\d+)\.inprogress$")
NEW = re.compile(r"^\.p(\d+)-(\d+)\.new$")


def finished_name(partition: int, first: int, last: int) -> str:
    return f"p{partition:03d}-{first:012d}-{last:012d}.jsonl"


def _in_progress_name(partition: int, first: int, last: int, size: int) -> str:
    return f".p{partition:03d}-{first:012d}-{last:012d}-{size}.inprogress"


@dataclass(frozen=True)
class PartFile:
    """A finished part file and the offsets its lines came from."""

    path: Path
    partition: int
    first: int
    last: int


def finished_files(directory: Path) -> list[PartFile]:
    """Finished part files in (partition, offset) order; hidden and foreign names ignored."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            m = FINISHED.match(entry.name)
            if m:
                found.append(PartFile(Path(entry.path), *map(int, m.groups())))
    return sorted(found, key=lambda f: (f.partition, f.first))


class PartitionWriter:
    """Appends batches of one partition's lines; the only writer of its partition's files."""

    def __init__(self, directory: Path, partition: int, roll_bytes: int, roll_seconds: float):
        self.directory = directory
        self.partition = partition
        self.roll_bytes = roll_bytes
        self.roll_seconds = roll_seconds
        self._fd: int | None = None
        self._first = 0
        self._last = -1
        self._size = 0
        self._opened_at = 0.0
        self._path: Path | None = None

    def recover(self) -> int | None:
        """Finish what a previous owner left; return the next offset to write, if known."""
        self.directory.mkdir(parents=True, exist_ok=True)
        next_offset = None
        changed = False
        for entry in os.scandir(self.directory):
            name = entry.name
            if (m := NEW.match(name)) and int(m.group(1)) == self.partition:
                os.unlink(entry.path)  # never checkpointed: its offsets will be read again
                changed = True
            elif (m := IN_PROGRESS.match(name)) and int(m.group(1)) == self.partition:
                _, first, last, size = map(int, m.groups())
                self._finish_file(Path(entry.path), first, last, size)
                next_offset = max(next_offset or 0, last + 1)
                changed = True
        if changed:
            fsync_dir(self.directory)
        for part in finished_files(self.directory):
            if part.partition == self.partition:
                next_offset = max(next_offset or 0, part.last + 1)
        return next_offset

    def _finish_file(self, path: Path, first: int, last: int, size: int) -> None:
        with open(path, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())
        os.replace(path, self.directory / finished_name(self.partition, first, last))

    def append(self, data: bytes, first: int, last: int) -> None:
        """Write one batch (whole lines) covering offsets first..last, durably, in one write."""
        if self._fd is None:
            path = self.directory / f".p{self.partition:03d}-{first:012d}.new"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            self._path, self._first, self._size = path, first, 0
            self._opened_at = time.monotonic()
        _write_all(self._fd, data)
        os.fsync(self._fd)
        size = self._size + len(data)
        checkpoint = self.directory / _in_progress_name(self.partition, self._first, last, size)
        os.replace(self._path, checkpoint)  # type: ignore[arg-type]
        fsync_dir(self.directory)
        self._path, self._last, self._size = checkpoint, last, size
        if size >= self.roll_bytes:
            self.finish()

    def due(self, now: float) -> bool:
        """True when the open file has been in progress for `roll_seconds`."""
        return self._fd is not None and now - self._opened_at >= self.roll_seconds

    def finish(self) -> None:
        """Publish the open file under its finished name; the next batch starts a new one."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        assert self._path is not None
        os.replace(
            self._path, self.directory / finished_name(self.partition, self._first, self._last)
        )
        fsync_dir(self.directory)
        self._path = None

    def abandon(self) -> None:
        """Close without publishing (after a write error): recovery decides what is durable."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._path = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
