"""Part files of one Kafka partition: in progress → finished, fenced against zombie writers.

The lifecycle is Flink FileSink's (in progress, pending, committed); the finished names are
Kafka Connect S3's (derived from offsets). For partition 3 of a channel directory `D`:

    D/.inprogress/p003-0000000007-000000000100.part   hidden: the file of owner epoch 7
    D/p003-000000000100-000000000599.jsonl            finished: whole, never rewritten

Each owner of a partition has an **epoch**, claimed by a fenced commit before it touches any
file (streams/worker/checkpoint.py), and writes only files named with its own epoch. It
appends whole batches to its in-progress file and fsyncs each one. What is durable is not
the file but the **checkpoint**: the worker commits, in the same Kafka transaction as the
consumer offsets, `(file, size, last offset)` of every open file. The broker refuses that
commit from a worker whose group generation is stale, so only the partition's current owner
can ever make bytes count.

Finishing a file publishes it with `link(2)`, which never replaces an existing name:
- the writer itself, after a commit, links its own *closed* file to the finished name;
- a new owner rolls forward what the committed checkpoint names by **copying** its committed
  bytes into a fresh inode and linking that. It never renames the old file into place: a
  zombie may still hold that file open and would append to a finished file through its
  descriptor. A zombie's writes only ever reach an unlinked inode.
Everything else in `.inprogress/` of the partition from an older epoch (a zombie's or a
crashed writer's uncommitted file) is deleted by the new owner; files of a newer epoch are
never touched, so even a zombie that froze in the middle of its own recovery cannot harm the
owner that came after it.
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
IN_PROGRESS_DIR = ".inprogress"
IN_PROGRESS = re.compile(r"^p(\d+)-(\d+)-(\d+)\.(part|copy)$")
# Written by json-engine before fenced checkpoints (upgrade: still finished on recovery).
LEGACY_IN_PROGRESS = re.compile(r"^\.p(\d+)-(\d+)-(\d+)-(\d+)\.inprogress$")
LEGACY_NEW = re.compile(r"^\.p(\d+)-(\d+)\.new$")
COPY_CHUNK = 8 * 1024 * 1024


def finished_name(partition: int, first: int, last: int) -> str:
    return f"p{partition:03d}-{first:012d}-{last:012d}.jsonl"


def in_progress_name(partition: int, epoch: int, first: int, kind: str = "part") -> str:
    return f"p{partition:03d}-{epoch:010d}-{first:012d}.{kind}"


@dataclass(frozen=True)
class PartFile:
    """A finished part file and the offsets its lines came from."""

    path: Path
    partition: int
    first: int
    last: int


@dataclass(frozen=True)
class Checkpoint:
    """What a committed checkpoint says of a partition's open file (None: no open file)."""

    file: str
    size: int
    last: int

    @property
    def first(self) -> int:
        match = IN_PROGRESS.match(self.file)
        if match is None:
            raise ValueError(f"not an in-progress file name: {self.file!r}")
        return int(match.group(3))


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
    """Appends batches of one partition's lines to its own in-progress file."""

    def __init__(
        self, directory: Path, partition: int, epoch: int, roll_bytes: int, roll_seconds: float
    ):
        self.directory = directory
        self.spool = directory / IN_PROGRESS_DIR
        self.partition = partition
        self.epoch = epoch
        self.roll_bytes = roll_bytes
        self.roll_seconds = roll_seconds
        self._fd: int | None = None
        self._name: str | None = None
        self._first = 0
        self._last = -1
        self._size = 0
        self._committed: Checkpoint | None = None
        self._opened_at = 0.0

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, checkpoint: Checkpoint | None) -> None:
        """Take the partition over in this writer's (newly claimed) epoch: roll the committed
        file forward, delete older epochs' files."""
        self.spool.mkdir(parents=True, exist_ok=True)
        if checkpoint is not None:
            self._roll_forward(checkpoint)
        for entry in os.scandir(self.spool):
            m = IN_PROGRESS.match(entry.name)
            if m and int(m.group(1)) == self.partition and int(m.group(2)) < self.epoch:
                with contextlib.suppress(FileNotFoundError):  # never committed, or rolled forward
                    os.unlink(entry.path)
        fsync_dir(self.spool)

    def _roll_forward(self, checkpoint: Checkpoint) -> None:
        target = self.directory / finished_name(self.partition, checkpoint.first, checkpoint.last)
        source = self.spool / checkpoint.file
        if target.exists():
            return  # finished already (by its writer, or by an earlier owner)
        copy = self.spool / in_progress_name(self.partition, self.epoch, checkpoint.first, "copy")
        try:
            src = open(source, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            if target.exists():
                return  # its writer finished it while we looked
            raise OSError(f"committed part file {source} is missing") from None
        with src, open(copy, "wb") as dst:
            remaining = checkpoint.size
            while remaining:
                chunk = src.read(min(COPY_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{source} is shorter than its checkpoint ({checkpoint.size})")
                dst.write(chunk)
                remaining -= len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        _link_new(copy, target)
        fsync_dir(self.directory)

    def recover_legacy(self) -> int | None:
        """Finish the part files of the layout before fenced checkpoints (written while no
        checkpoint of ours was committed) and return the next offset they prove, if any."""
        if not self.directory.exists():
            return None
        next_offset = None
        for entry in os.scandir(self.directory):
            name = entry.name
            if (m := LEGACY_NEW.match(name)) and int(m.group(1)) == self.partition:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            elif (m := LEGACY_IN_PROGRESS.match(name)) and int(m.group(1)) == self.partition:
                _, first, last, size = map(int, m.groups())
                with contextlib.suppress(FileNotFoundError):
                    with open(entry.path, "r+b") as f:
                        f.truncate(size)
                        os.fsync(f.fileno())
                    target = self.directory / finished_name(self.partition, first, last)
                    os.replace(entry.path, target)
        fsync_dir(self.directory)
        for part in finished_files(self.directory):
            if part.partition == self.partition:
                next_offset = max(next_offset or 0, part.last + 1)
        return next_offset

    # -- writing -----------------------------------------------------------------------------

    def append(self, data: bytes, first: int, last: int) -> None:
        """Write one batch (whole lines) covering offsets first..last and fsync it.

        Durable on disk, but it counts only once a checkpoint naming it is committed."""
        if self._fd is None:
            self._name = in_progress_name(self.partition, self.epoch, first)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(self.spool / self._name, flags, 0o644)
            self._first, self._size = first, 0
            self._opened_at = time.monotonic()
            fsync_dir(self.spool)
        _write_all(self._fd, data)
        os.fsync(self._fd)
        self._size += len(data)
        self._last = last

    def checkpoint(self) -> Checkpoint | None:
        """The open file as the next commit should record it."""
        if self._fd is None or self._name is None:
            return None
        return Checkpoint(self._name, self._size, self._last)

    def committed(self) -> None:
        """The checkpoint taken last was committed; finish the file if it is due."""
        self._committed = self.checkpoint()
        if self._fd is not None and (
            self._size >= self.roll_bytes or time.monotonic() - self._opened_at >= self.roll_seconds
        ):
            self.finish()

    def due(self, now: float) -> bool:
        """True when the open, committed file has been in progress for `roll_seconds`."""
        return (
            self._fd is not None
            and self._committed == self.checkpoint()
            and now - self._opened_at >= self.roll_seconds
        )

    def finish(self) -> None:
        """Publish the open file, all of it committed, under its finished name."""
        if self._fd is None or self._name is None:
            return
        if self._committed != self.checkpoint():
            raise RuntimeError("finish() of a file with uncommitted bytes")
        os.close(self._fd)
        self._fd = None
        source = self.spool / self._name
        _link_new(source, self.directory / finished_name(self.partition, self._first, self._last))
        fsync_dir(self.directory)
        self._name = None
        self._committed = None

    def abandon(self) -> None:
        """Close without publishing: the next owner decides from the committed checkpoint."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._name = None
        self._committed = None


def _link_new(source: Path, target: Path) -> None:
    """Publish `source` as `target` unless `target` exists (then it holds the same committed
    bytes, published by another owner); either way `source` goes. A `source` that is gone was
    rolled forward by a newer owner: this writer was a zombie, and publishes nothing."""
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.link(source, target)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(source)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
