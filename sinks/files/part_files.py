"""Part files of one Kafka partition: in progress → finished, fenced against zombie writers.

The lifecycle is Flink FileSink's (in progress, pending, committed); the finished names are
Kafka Connect S3's (derived from offsets); finished files sit in time buckets
(sinks/files/buckets.py). For partition 3 of a channel directory `D`:

    D/.inprogress/p003-0000000007-000000000100-2026120108.part   hidden: epoch 7's open file
    D/date=2026-12-01/hour=08/p003-000000000100-000000000599.jsonl   finished, never rewritten

Each owner of a partition has an **epoch**, claimed by a fenced commit before it touches any
file (streams/worker/checkpoint.py), and writes only files named with its own epoch: one open
file per bucket it writes to. It appends whole batches and fsyncs them before each
checkpoint (in the worker's commit thread, beside the next batch's parsing). What is durable
is not the file but the **checkpoint**: the worker commits, in the same Kafka transaction as
the consumer offsets, `(file, size, last offset)` of every open file. The broker refuses that
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
import functools
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sinks.atomic import fsync_dir
from sinks.files.listing import finished_paths
from sinks.files.manifest import INLINE_FILES, manifest_of, parse
from sinks.files.names import (
    IN_PROGRESS,
    IN_PROGRESS_DIR,
    MANIFEST,
    Checkpoint,
    finished_name,
    in_progress_name,
    in_progress_suffix,
)
from sinks.files.retention import cutoff, expired

log = logging.getLogger(__name__)

# Written by json-engine before fenced checkpoints (upgrade: still finished on recovery).
LEGACY_IN_PROGRESS = re.compile(r"^\.p(\d+)-(\d+)-(\d+)-(\d+)\.inprogress$")
LEGACY_NEW = re.compile(r"^\.p(\d+)-(\d+)\.new$")
COPY_CHUNK = 8 * 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")
# fsyncs of many files at once go in parallel: 900 files took 250-450 ms one by one and
# about 110 ms from 16 threads (ext4, a virtual disk).
PARALLEL_SYNC_FROM = 8
SYNC_THREADS = 16


@dataclass
class _OpenFile:
    fd: int
    name: str
    bucket: str
    first: int
    last: int = -1
    size: int = 0
    opened_at: float = 0.0
    committed: Checkpoint | None = None
    fresh: bool = True  # appended to since the last commit

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.name, self.size, self.last)


class PartitionWriter:
    """Appends batches of one partition's lines to its own in-progress files, one per bucket."""

    def __init__(
        self,
        directory: Path,
        partition: int,
        epoch: int,
        roll_bytes: int,
        roll_seconds: float,
        retention_days: float | None = None,
        suffix: str = "",
    ):
        self.directory = directory
        self.suffix = suffix  # of the files it opens: their compression (sinks/formats/)
        self.spool = directory / IN_PROGRESS_DIR
        self.partition = partition
        self.epoch = epoch
        self.roll_bytes = roll_bytes
        self.roll_seconds = roll_seconds
        self.retention_days = retention_days
        self._open: dict[str, _OpenFile] = {}
        self._active: str | None = None  # the bucket written last: it stays open after commits
        self._unsynced: dict[str, _OpenFile] = {}  # by name: appended to since the last sync()
        self._spool_dirty = False  # a file was created in the spool since the last sync()
        self._manifest_fd: int | None = None  # a manifest written since the last sync()
        self._listed: str | None = None  # the manifest the last checkpoints() named
        self._committed_manifest: str | None = None  # the one the last commit named
        self.published = 0  # files made visible under their finished names, so far

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, checkpoints: list[Checkpoint]) -> None:
        """Take the partition over in this writer's (newly claimed) epoch: roll the committed
        files forward, delete older epochs' files. A manifest the checkpoints name stays until
        this writer's first commit (its claim names it too)."""
        self.spool.mkdir(parents=True, exist_ok=True)
        for checkpoint in expand(self.directory, checkpoints):
            self._roll_forward(checkpoint)
        named = {c.file for c in checkpoints if c.is_manifest}
        for entry in os.scandir(self.spool):
            m = IN_PROGRESS.match(entry.name) or MANIFEST.match(entry.name)
            if (
                m
                and int(m.group(1)) == self.partition
                and int(m.group(2)) < self.epoch
                and entry.name not in named
            ):
                with contextlib.suppress(FileNotFoundError):  # never committed, or rolled forward
                    os.unlink(entry.path)
        fsync_dir(self.spool)
        self._committed_manifest = next(iter(named), None)

    def _roll_forward(self, checkpoint: Checkpoint) -> None:
        suffix = checkpoint.suffix  # the codec it was written in, whatever the config says now
        name = finished_name(self.partition, checkpoint.first, checkpoint.last, suffix)
        target = self.directory / checkpoint.bucket / name
        source = self.spool / checkpoint.file
        if target.exists():
            return  # finished already (by its writer, or by an earlier owner)
        copy = self.spool / in_progress_name(
            self.partition, self.epoch, checkpoint.first, checkpoint.bucket, "copy", suffix
        )
        try:
            src = open(source, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            if target.exists() or self._gone_past_retention(checkpoint):
                return  # its writer finished it while we looked, or retention deleted it
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
        self._link_into(copy, checkpoint.bucket, name)

    def _gone_past_retention(self, checkpoint: Checkpoint) -> bool:
        """A committed file whose bytes and finished copy are both gone is fine only in a
        bucket past retention: its writer finished it, and retention deleted it before the
        next commit stopped naming it. Anywhere else it would be lost data."""
        if not expired(checkpoint.bucket, cutoff(self.retention_days)):
            return False
        log.warning(
            "partition %d: committed file %s is gone, and so is %s: its bucket is past "
            "retention (output.retention_days %s), so retention deleted it; nothing to roll "
            "forward",
            self.partition,
            checkpoint.file,
            checkpoint.finished,
            self.retention_days,
        )
        return True

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
        for part in finished_paths(self.directory):
            if part.partition == self.partition:
                next_offset = max(next_offset or 0, part.last + 1)
        return next_offset

    # -- writing -----------------------------------------------------------------------------

    def append(self, data: bytes, first: int, last: int, bucket: str) -> None:
        """Write one batch of whole lines of `bucket`, covering offsets first..last; `sync()`
        makes it durable. It counts only once a checkpoint naming it is committed."""
        file = self._open.get(bucket)
        if file is None:
            name = in_progress_name(self.partition, self.epoch, first, bucket, suffix=self.suffix)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(self.spool / name, flags, 0o644)
            file = self._open[bucket] = _OpenFile(fd, name, bucket, first)
            file.opened_at = time.monotonic()
            self._spool_dirty = True
        _write_all(file.fd, data)
        self._unsynced[file.name] = file
        file.size += len(data)
        file.last = last
        file.fresh = True
        self._active = bucket

    def sync(self) -> None:
        """fsync what was appended since the last call, and the new files' names. The worker
        calls it from its commit thread while nothing else touches this writer's files (one
        checkpoint in flight, nothing written meanwhile: streams/worker/checkpoint.py)."""
        unsynced, self._unsynced = self._unsynced, {}
        if len(unsynced) < PARALLEL_SYNC_FROM:
            for file in unsynced.values():
                _sync(file)
        else:  # many buckets (a backfill): the file system commits concurrent fsyncs together
            list(_sync_pool().map(_sync, unsynced.values()))
        if self._manifest_fd is not None:
            fd, self._manifest_fd = self._manifest_fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if self._spool_dirty:
            self._spool_dirty = False
            fsync_dir(self.spool)

    def collect(self) -> None:
        """Take in what finished in the background since the last call (S3: publications)."""

    def await_publication(self, timeout: float) -> bool:
        """Wait up to `timeout` for a file being published in the background; False when
        none is (here: files are published at once)."""
        return False

    @property
    def open_buckets(self) -> set[str]:
        return set(self._open)

    def checkpoints(self) -> list[Checkpoint]:
        """What the next commit records: the open files, or past INLINE_FILES one manifest
        that lists them (sinks/files/manifest.py), written now; `sync()` makes it durable."""
        files = self._files()
        if len(files) <= INLINE_FILES:
            self._listed = None
            return files
        name, data = manifest_of(self.partition, self.epoch, files)
        if name != self._listed:
            self._write_manifest(name, data)
            self._listed = name
        return [Checkpoint(name, len(data), max(f.last for f in files))]

    def _files(self) -> list[Checkpoint]:
        """The files a commit must name."""
        return [file.checkpoint() for file in self._open.values()]

    def _write_manifest(self, name: str, data: bytes) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        fd = os.open(self.spool / name, flags, 0o644)
        try:
            _write_all(fd, data)
        except OSError:
            os.close(fd)
            raise
        if self._manifest_fd is not None:
            os.close(self._manifest_fd)  # never synced: no commit names it
        self._manifest_fd = fd
        self._spool_dirty = True

    def _drop_manifest(self, name: str) -> None:
        """A manifest no commit names any more (a leftover is harmless: hidden, and a new
        owner deletes older epochs' ones)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spool / name)

    def committed(self) -> None:
        """The checkpoints taken last were committed. The files that got lines in it stay
        open (a backfill keeps writing many buckets), and so does the one written last;
        the others finish, and these too once they reach `roll_bytes` or `roll_seconds`. A
        manifest the commit no longer names goes."""
        now = time.monotonic()
        for bucket, file in list(self._open.items()):
            file.committed = file.checkpoint()
            if (
                not (file.fresh or bucket == self._active)
                or file.size >= self.roll_bytes
                or now - file.opened_at >= self.roll_seconds
            ):
                self._finish(bucket)
            else:
                file.fresh = False
        superseded, self._committed_manifest = self._committed_manifest, self._listed
        if superseded is not None and superseded != self._listed:
            self._drop_manifest(superseded)

    def due(self, now: float) -> bool:
        """True when an open, committed file has been in progress for `roll_seconds`."""
        return any(
            f.committed == f.checkpoint() and now - f.opened_at >= self.roll_seconds
            for f in self._open.values()
        )

    def finish(self) -> None:
        """Publish every open file, all of it committed, under its finished name."""
        for bucket in list(self._open):
            self._finish(bucket)

    def roll_due(self, now: float) -> None:
        for bucket, f in list(self._open.items()):
            if f.committed == f.checkpoint() and now - f.opened_at >= self.roll_seconds:
                self._finish(bucket)

    def _finish(self, bucket: str) -> None:
        file = self._open[bucket]
        if file.committed != file.checkpoint():
            raise RuntimeError("finish() of a file with uncommitted bytes")
        del self._open[bucket]
        os.close(file.fd)
        name = finished_name(self.partition, file.first, file.last, in_progress_suffix(file.name))
        self._link_into(self.spool / file.name, bucket, name)
        self.published += 1

    def _link_into(self, source: Path, bucket: str, name: str) -> None:
        """Publish `source` as `name` in the bucket's folder, made if need be, durably. A
        folder that another worker's retention emptied and removed meanwhile is made again."""
        for attempt in range(2):
            try:
                folder = self._bucket_dir(bucket)
                _link_new(source, folder / name)
                fsync_dir(folder)
                return
            except FileNotFoundError:
                if attempt:
                    raise

    def _bucket_dir(self, bucket: str) -> Path:
        folder = self.directory / bucket
        if not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)
            fsync_dir(folder.parent)  # the new folders' names are durable too
            fsync_dir(self.directory)
        return folder

    def abandon(self) -> None:
        """Close without publishing: the next owner decides from the committed checkpoint."""
        for file in self._open.values():
            with contextlib.suppress(OSError):
                os.close(file.fd)
        if self._manifest_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._manifest_fd)
            self._manifest_fd = None
        self._open.clear()
        self._active = None
        self._unsynced = {}


def _sync(file: _OpenFile) -> None:
    os.fsync(file.fd)
    # Written once, read rarely (a recovery, the offline readers): the synced pages leave the
    # page cache, which keeps the broker's segments and other readers' data there, and the
    # next batches reuse the freed pages instead of taking fresh ones (on a VM whose memory is
    # backed lazily, a first touch costs ~10x the copy). The last partial page stays: the
    # next append would have to read it back.
    os.posix_fadvise(file.fd, 0, file.size - file.size % PAGE, os.POSIX_FADV_DONTNEED)


@functools.cache
def _sync_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="json-engine-fsync")


def expand(directory: Path, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """The files committed checkpoints name, read from their manifests where they name one
    (in the channel directory's spool)."""
    files = []
    for checkpoint in checkpoints:
        if not checkpoint.is_manifest:
            files.append(checkpoint)
            continue
        try:
            data: bytes | None = (directory / IN_PROGRESS_DIR / checkpoint.file).read_bytes()
        except FileNotFoundError:
            data = None
        files += parse(checkpoint, data)
    return files


def _link_new(source: Path, target: Path) -> None:
    """Publish `source` as `target` unless `target` exists (then it holds the same committed
    bytes, published by another owner); either way `source` goes. A `source` that is gone was
    rolled forward by a newer owner: this writer was a zombie, and publishes nothing. A
    target folder that is gone raises FileNotFoundError."""
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except FileNotFoundError:
        if os.path.lexists(source):
            raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(source)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
