"""Part objects of one Kafka partition on S3: in progress → finished, fenced against zombies.

The filesystem's lifecycle (sinks/files/part_files.py) with keys for files. For partition 3
of a channel prefix `D`:

    local spool   …/p003-0000000007-000000000100-2026120108.part      epoch 7's open file
    D/.inprogress/p003-0000000007-000000000100-2026120108/000000.part  its bytes of checkpoint 1
    D/.inprogress/p003-0000000007-000000000100-2026120108/000001.part  … of checkpoint 2
    D/date=2026-12-01/hour=08/p003-000000000100-000000000599.jsonl     finished, never rewritten

- **Writing.** An owner appends each batch to a local spool file (its own disk, no fsync:
  nothing there has to survive it) and, before the checkpoint's transaction, uploads the
  batch as the next hidden *part object* of that file. The committed checkpoint says the
  file's size, so the parts that count are the first ones of the owner's epoch that add up to
  it; a part uploaded for a checkpoint that never committed is past that size and ignored.
- **Publishing.** A finished file is one PUT of its committed bytes (from the spool) to the
  visible key with `If-None-Match: *`. `PreconditionFailed` means the key exists: an earlier
  owner, or this writer's predecessor, published the same committed bytes (a key names its
  partition and offset range, and only committed bytes are ever published). Then its parts go.
  The PUT runs in the background while reading goes on; until it is done the file stays in
  the checkpoints, so that a new owner publishes it if this worker dies first.
- **Recovery** by a new owner (maybe on another machine, without the spool): after it claimed
  the next epoch, each file the committed checkpoint names is published from its parts (GET,
  concatenate, conditional PUT), unless its key exists; then every hidden object of the
  partition from an older epoch is deleted, and any multipart upload below it aborted (this
  writer makes none; a PUT is one request up to 5 GiB).
- **Zombies.** A worker frozen past its session and thawed writes only keys of its own epoch:
  its parts are never counted (its commits are refused, so no checkpoint names them), its
  publish of a committed file either lands first with the committed bytes or is refused, and
  it deletes only its own parts or older epochs', never the new owner's. What it uploads after
  the new owner cleaned up stays hidden until the partition is recovered again.

Kafka Connect's S3 sink names objects by offsets too, but overwrites them, so a zombie task
that rewrites a key replaces data (kafka-connect-storage-cloud issue 800); here no key this
project writes is ever replaced, and only the fenced owner's bytes are counted.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path

from sinks.files.manifest import parse
from sinks.files.names import (
    IN_PROGRESS,
    IN_PROGRESS_DIR,
    MANIFEST,
    Checkpoint,
    finished_name,
    in_progress_name,
)
from sinks.files.part_files import PartitionWriter, _OpenFile, _write_all
from sinks.s3.location import S3Location
from sinks.s3.store import ObjectStoreError, S3Store, store_of

PART = re.compile(r"^(\d{6,})\.part$")
SPOOL_PREFIX = "json-engine-spool-"


def hidden_stem(name: str) -> str:
    """`p003-…-2026120108.part` → the folder of its part objects."""
    return name.removesuffix(".part")


class S3PartitionWriter(PartitionWriter):
    """Appends batches of one partition's lines to its spool files and part objects."""

    def __init__(
        self,
        directory: S3Location,
        partition: int,
        epoch: int,
        roll_bytes: int,
        roll_seconds: float,
        retention_days: float | None = None,
    ):
        super().__init__(
            directory,  # type: ignore[arg-type]
            partition,
            epoch,
            roll_bytes,
            roll_seconds,
            retention_days,
        )
        self.remote = directory
        self.hidden = directory / IN_PROGRESS_DIR
        self.store: S3Store = store_of(directory)
        self.spool = (
            spool_root(self.store.options.spool_dir)
            / f"{directory.bucket}"
            / (directory.key.replace("/", "_") or "_")
        )
        self._parts: dict[str, int] = {}  # open file name → part objects uploaded
        self._uploads: list[Future[bool]] = []
        self._publishing: dict[str, tuple[Checkpoint, Future[None]]] = {}

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, checkpoints: list[Checkpoint]) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        mine = f"p{self.partition:03d}-"
        objects = dict(self.store.list(self.hidden, mine))
        for checkpoint in expand(self.remote, checkpoints):
            self._roll_forward(checkpoint, objects)
        self.store.abort_uploads(self.hidden, mine)
        named = {c.file for c in checkpoints if c.is_manifest}
        stale = []
        skip = len(self.hidden.prefix)
        for key in objects:
            name = key[skip:].split("/", 1)[0]
            m = IN_PROGRESS.match(name + ".part") or MANIFEST.match(name)
            if (
                m
                and int(m.group(1)) == self.partition
                and int(m.group(2)) < self.epoch
                and name not in named
            ):
                stale.append(key)
        self.store.delete(self.remote.bucket, stale)
        self._committed_manifest = next(iter(named), None)

    def _roll_forward(self, checkpoint: Checkpoint, objects: dict[str, int]) -> None:
        target = self._target(checkpoint.bucket, checkpoint.first, checkpoint.last)
        if self.store.size(target) is not None:
            return  # finished already (by its writer, or by an earlier owner)
        folder = (self.hidden / hidden_stem(checkpoint.file)).prefix
        parts = sorted(
            (int(m.group(1)), key, size)
            for key, size in objects.items()
            if key.startswith(folder) and (m := PART.match(key[len(folder) :]))
        )
        chosen, total = [], 0
        for seq, key, size in parts:
            if seq != len(chosen) or total >= checkpoint.size:
                break
            chosen.append(key)
            total += size
        if total != checkpoint.size:
            if self.store.size(target) is not None or self._gone_past_retention(checkpoint):
                return  # its writer finished it (and deleted its parts), or retention took it
            raise ObjectStoreError(
                f"the committed part objects of {self.hidden / hidden_stem(checkpoint.file)} "
                f"hold {total} bytes, its checkpoint {checkpoint.size}",
                False,
                "MissingParts",
            )
        copy = self.spool / f"{hidden_stem(checkpoint.file)}.{self.epoch}.copy"
        try:
            with open(copy, "w+b") as out:
                for key in chosen:
                    data = self.store.get(S3Location(self.remote.bucket, key))
                    if data is None:
                        if self.store.size(target) is not None:
                            return  # published meanwhile by its writer
                        if self._gone_past_retention(checkpoint):
                            return  # published, its parts deleted, then retention took it
                        raise ObjectStoreError(f"part object {key} is missing", False, "NoSuchKey")
                    out.write(data)
                out.flush()
                out.seek(0)
                self.store.put_new(target, out)
        finally:
            copy.unlink(missing_ok=True)

    def recover_legacy(self) -> int | None:
        return None  # S3 output began with fenced checkpoints: there is no older layout

    # -- writing -----------------------------------------------------------------------------

    def append(self, data: bytes, first: int, last: int, bucket: str) -> None:
        """Write one batch to the spool and start uploading it as the file's next part;
        `sync()` waits until every part is durable. It counts once a checkpoint names it."""
        file = self._open.get(bucket)
        if file is None:
            name = in_progress_name(self.partition, self.epoch, first, bucket)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(self.spool / name, flags, 0o600)
            file = self._open[bucket] = _OpenFile(fd, name, bucket, first)
            file.opened_at = time.monotonic()
            self._parts[name] = 0
        _write_all(file.fd, data)
        seq = self._parts[file.name]
        self._parts[file.name] = seq + 1
        key = self.hidden / hidden_stem(file.name) / f"{seq:06d}.part"
        self._uploads.append(self.store.pool.submit(self._upload_part, key, data))
        file.size += len(data)
        file.last = last
        file.fresh = True
        self._active = bucket

    def _upload_part(self, key: S3Location, data: bytes) -> bool:
        if self.store.put_new(key, data):
            return True
        # Its key exists: only this writer writes its epoch's keys, so an earlier try of this
        # very request got there (a retry after a lost response). Anything else is a fault.
        if self.store.size(key) != len(data):
            raise ObjectStoreError(f"{key} exists with other content", False, "PartConflict")
        return True

    def sync(self) -> None:
        """Wait for every part started since the last call (in the worker's commit thread);
        raise the first failure."""
        uploads, self._uploads = self._uploads, []
        error: BaseException | None = None
        for upload in uploads:
            try:
                upload.result()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

    def collect(self) -> None:
        """Take in the publications that are done; raise the first failure."""
        error: BaseException | None = None
        for name, (_checkpoint, publication) in list(self._publishing.items()):
            if publication.done():
                del self._publishing[name]
                failure = publication.exception()
                error = error or failure
                self.published += failure is None
        if error is not None:
            raise error

    def await_publication(self, timeout: float) -> bool:
        """Wait up to `timeout` until a publication is done (`collect()` takes it in); False
        when none is running."""
        if not self._publishing:
            return False
        wait([p for _c, p in self._publishing.values()], timeout, FIRST_COMPLETED)
        return True

    @property
    def open_buckets(self) -> set[str]:
        """Buckets of open files and of files being published (both are in the metadata)."""
        return set(self._open) | {c.bucket for c, _p in self._publishing.values()}

    def _files(self) -> list[Checkpoint]:
        """The open files, and the finished files whose publication is not done yet (a new
        owner publishes those if this worker dies first)."""
        published = [c for c, _p in self._publishing.values()]
        return [*published, *(file.checkpoint() for file in self._open.values())]

    def _write_manifest(self, name: str, data: bytes) -> None:
        """Uploaded like a part: `sync()` waits for it. Its name is its content's digest, so
        a key that exists holds these very bytes."""
        self._uploads.append(self.store.pool.submit(self.store.put_new, self.hidden / name, data))

    def _drop_manifest(self, name: str) -> None:
        """In the background; a leftover is harmless (a new owner deletes older epochs')."""
        self.store.pool.submit(self.store.delete, self.remote.bucket, [(self.hidden / name).key])

    def finish(self) -> None:
        """Publish every open file and wait until every publication is done."""
        for bucket in list(self._open):
            self._finish(bucket)
        publishing, self._publishing = self._publishing, {}
        for _checkpoint, publication in publishing.values():
            publication.result()

    def _finish(self, bucket: str) -> None:
        """Close a committed file and publish it in the background: one conditional PUT of
        its spool (PreconditionFailed: published already, with the same bytes), then its
        parts go. Until that is done the file stays in the checkpoints."""
        file = self._open[bucket]
        checkpoint = file.checkpoint()
        if file.committed != checkpoint:
            raise RuntimeError("finish() of a file with uncommitted bytes")
        del self._open[bucket]
        os.close(file.fd)
        target = self._target(bucket, file.first, file.last)
        parts = self._parts.pop(file.name, 0)
        publication = self.store.pool.submit(self._publish, file.name, target, parts)
        self._publishing[file.name] = (checkpoint, publication)

    def _publish(self, name: str, target: S3Location, parts: int) -> None:
        spool = self.spool / name
        with open(spool, "rb") as body:
            self.store.put_new(target, body)
        spool.unlink(missing_ok=True)
        folder = self.hidden / hidden_stem(name)
        keys = [(folder / f"{seq:06d}.part").key for seq in range(parts)]
        self.store.delete(self.remote.bucket, keys)

    def _target(self, bucket: str, first: int, last: int) -> S3Location:
        return self.remote / bucket / finished_name(self.partition, first, last)

    def _bucket_dir(self, bucket: str) -> Path:  # pragma: no cover - folders are implicit
        raise NotImplementedError

    def abandon(self) -> None:
        for upload in self._uploads:
            upload.cancel()
        self._uploads = []
        for file in self._open.values():
            with contextlib.suppress(OSError):
                os.close(file.fd)
            (self.spool / file.name).unlink(missing_ok=True)
        self._open.clear()
        self._parts.clear()
        self._publishing.clear()  # a publication still running lands or is refused alone
        self._active = None


def expand(directory: S3Location, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """The files committed checkpoints name, read from their manifests where they name one
    (hidden objects of the channel)."""
    files = []
    for checkpoint in checkpoints:
        if checkpoint.is_manifest:
            where = directory / IN_PROGRESS_DIR / checkpoint.file
            files += parse(checkpoint, store_of(directory).get(where))
        else:
            files.append(checkpoint)
    return files


_spools: dict[str | None, Path] = {}


def spool_root(base: str | None) -> Path:
    """This process's own spool folder (removed at exit); folders of dead processes go."""
    root = _spools.get(base)
    if root is None:
        parent = Path(base or tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        for entry in parent.glob(f"{SPOOL_PREFIX}*"):
            pid = entry.name.removeprefix(SPOOL_PREFIX).split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
        made = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-", dir=parent)
        root = _spools[base] = Path(made)
        atexit.register(shutil.rmtree, root, True)
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
