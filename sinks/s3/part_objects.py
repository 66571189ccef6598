"""Part objects of one Kafka partition on S3: in progress → finished, fenced against zombies.

The filesystem's lifecycle (sinks/files/part_files.py) with keys for files. For partition 3
of a channel prefix `D`:

    local spool   …/p003-0000000007-000000000100-2026120108.part      epoch 7's open file
    D/.inprogress/p003-0000000007/000000.pack                          epoch 7's checkpoint 1
    D/.inprogress/p003-0000000007/000001.pack                          … checkpoint 2
    D/date=2026-12-01/hour=08/p003-000000000100-000000000599.jsonl     finished, never rewritten

- **Writing.** An owner appends each batch to a local spool file (its own disk, no fsync:
  nothing there has to survive it) and, before the checkpoint's transaction, uploads what the
  checkpoint appended to all of the partition's open files as the next hidden *pack*
  (sinks/s3/packs.py: one object, whatever the number of buckets). The committed checkpoint
  says each file's size, so the bytes that count are the file's pieces in the owner's packs,
  in order from its start, up to that size; a pack uploaded for a checkpoint that never
  committed is past those sizes and ignored.
- **Publishing.** A finished file is one PUT of its committed bytes (from the spool) to the
  visible key with `If-None-Match: *`. `PreconditionFailed` means the key exists: an earlier
  owner, or this writer's predecessor, published the same committed bytes (a key names its
  partition and offset range, and only committed bytes are ever published). The PUT runs in
  the background while reading goes on; until it is done the file stays in the checkpoints,
  so that a new owner publishes it if this worker dies first. A pack goes once every file
  with bytes in it is published.
- **Recovery** by a new owner (maybe on another machine, without the spool): after it claimed
  the next epoch, each file the committed checkpoint names is published from the packs
  (GET each in order, keep the file's pieces, conditional PUT), unless its key exists; then
  every hidden object of the partition from an older epoch is deleted, and any multipart
  upload below it aborted (this writer makes none; a PUT is one request up to 5 GiB). Files
  of a version before packs are read from their own part objects
  (`.inprogress/<file>/000007.part`, the first ones that add up to the size).
- **Zombies.** A worker frozen past its session and thawed writes only keys of its own epoch:
  its packs are never counted past the committed sizes (its commits are refused, so no
  checkpoint counts them), its publish of a committed file either lands first with the
  committed bytes or is refused, and it deletes only its own packs or older epochs', never
  the new owner's. What it uploads after the new owner cleaned up stays hidden until the
  partition is recovered again.

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
    in_progress_name,
)
from sinks.files.part_files import PartitionWriter, _OpenFile, _write_all
from sinks.s3 import packs
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
        suffix: str = "",
    ):
        super().__init__(
            directory,  # type: ignore[arg-type]
            partition,
            epoch,
            roll_bytes,
            roll_seconds,
            retention_days,
            suffix,
        )
        self.remote = directory
        self.hidden = directory / IN_PROGRESS_DIR
        self.store: S3Store = store_of(directory)
        self.spool = (
            spool_root(self.store.options.spool_dir)
            / f"{directory.bucket}"
            / (directory.key.replace("/", "_") or "_")
        )
        self._uploads: list[Future[bool]] = []
        self._publishing: dict[str, tuple[Checkpoint, Future[None]]] = {}
        self._pieces: list[packs.Piece] = []  # appended since the last pack
        self._packs = 0  # packs sealed in this epoch
        self._pack_files: dict[int, set[str]] = {}  # pack → its files not published yet
        self._file_packs: dict[str, list[int]] = {}  # file → the packs holding its bytes

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, checkpoints: list[Checkpoint]) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        mine = f"p{self.partition:03d}-"
        objects = dict(self.store.list(self.hidden, mine))
        self._roll_forward_all(expand(self.remote, checkpoints), objects)
        self.store.abort_uploads(self.hidden, mine)
        named = {c.file for c in checkpoints if c.is_manifest}
        stale = []
        skip = len(self.hidden.prefix)
        for key in objects:
            name = key[skip:].split("/", 1)[0]
            m = IN_PROGRESS.match(name + ".part") or packs.FOLDER.match(name)
            m = m or MANIFEST.match(name)
            if (
                m
                and int(m.group(1)) == self.partition
                and int(m.group(2)) < self.epoch
                and name not in named
            ):
                stale.append(key)
        self.store.delete(self.remote.bucket, stale)
        self._committed_manifest = next(iter(named), None)

    def _roll_forward_all(self, checkpoints: list[Checkpoint], objects: dict[str, int]) -> None:
        """Publish every committed file that is not yet, from its packs (or, written by a
        version before packs, from its own part objects)."""
        by_epoch: dict[int, dict[str, Checkpoint]] = {}
        for checkpoint in checkpoints:
            target = self._target(checkpoint)
            if self.store.size(target) is not None:
                continue  # finished already (by its writer, or by an earlier owner)
            own_parts = (self.hidden / hidden_stem(checkpoint.file)).prefix
            if any(key.startswith(own_parts) for key in objects):
                self._roll_forward(checkpoint, objects)
            else:
                epoch = int(IN_PROGRESS.match(checkpoint.file).group(2))  # type: ignore[union-attr]
                by_epoch.setdefault(epoch, {})[checkpoint.file] = checkpoint
        for epoch, wanted in by_epoch.items():
            self._roll_forward_packs(epoch, wanted, objects)

    def _roll_forward_packs(
        self, epoch: int, wanted: dict[str, Checkpoint], objects: dict[str, int]
    ) -> None:
        prefix = (self.hidden / packs.folder(self.partition, epoch)).prefix
        found = sorted(
            (int(m.group(1)), key)
            for key in objects
            if key.startswith(prefix) and (m := packs.PACK.match(key[len(prefix) :]))
        )
        work = self.spool / f"recovery-{self.epoch}"
        try:
            copies = packs.assemble(
                self.store,
                [S3Location(self.remote.bucket, key) for _seq, key in found],
                {name: checkpoint.size for name, checkpoint in wanted.items()},
                work,
            )
            for name, checkpoint in wanted.items():
                target = self._target(checkpoint)
                copy = copies.get(name)
                if copy is not None:
                    with open(copy, "rb") as body:
                        self.store.put_new(target, body)
                elif self.store.size(target) is None and not self._gone_past_retention(checkpoint):
                    raise ObjectStoreError(
                        f"the committed packs of {name} in {self.hidden} do not hold its "
                        f"{checkpoint.size} bytes",
                        False,
                        "MissingParts",
                    )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _roll_forward(self, checkpoint: Checkpoint, objects: dict[str, int]) -> None:
        """A file of a version before packs: its bytes are its own part objects, the first
        ones that add up to its size."""
        target = self._target(checkpoint)
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
        """Write one batch to the spool; the next `checkpoints()` packs it with the rest of the
        checkpoint's batches and starts the upload, `sync()` waits for it. It counts once a
        checkpoint names it."""
        file = self._open.get(bucket)
        if file is None:
            name = in_progress_name(self.partition, self.epoch, first, bucket, suffix=self.suffix)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(self.spool / name, flags, 0o600)
            file = self._open[bucket] = _OpenFile(fd, name, bucket, first)
            file.opened_at = time.monotonic()
        _write_all(file.fd, data)
        pieces = self._pieces
        name, offset, length = pieces[-1] if pieces else ("", 0, 0)
        if name == file.name and offset + length == file.size:  # the file's next bytes
            pieces[-1] = (name, offset, length + len(data))
        else:
            pieces.append((file.name, file.size, len(data)))
        file.size += len(data)
        file.last = last
        file.fresh = True
        self._active = bucket

    def checkpoints(self) -> list[Checkpoint]:
        self._seal()
        return super().checkpoints()

    def _seal(self) -> None:
        """Upload what was appended since the last pack as the epoch's next pack."""
        if not self._pieces:
            return
        pieces, self._pieces = self._pieces, []
        seq = self._packs
        self._packs += 1
        key = self.hidden / packs.folder(self.partition, self.epoch) / packs.pack_name(seq)
        self._uploads.append(self.store.pool.submit(self._upload, key, pieces))
        names = {name for name, _offset, _length in pieces}
        self._pack_files[seq] = names
        for name in names:
            self._file_packs.setdefault(name, []).append(seq)

    def _upload(self, key: S3Location, pieces: list[packs.Piece]) -> bool:
        """Read the pack from the spool and upload it (on the upload pool, not the batch
        thread; the spool files are neither written nor removed until `sync()` waited)."""
        data = packs.encode(pieces, self.spool)
        if self.store.put_new(key, data):
            return True
        # Its key exists: only this writer writes its epoch's keys, so an earlier try of this
        # very request got there (a retry after a lost response). Anything else is a fault.
        if self.store.size(key) != len(data):
            raise ObjectStoreError(f"{key} exists with other content", False, "PartConflict")
        return True

    def sync(self) -> None:
        """Wait for every upload started since the last call (in the worker's commit thread,
        after `checkpoints()` packed what was appended); raise the first failure."""
        self._seal()
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
        """Take in the publications that are done; raise the first failure. A pack whose
        files are all published goes."""
        error: BaseException | None = None
        done = []
        for name, (_checkpoint, publication) in list(self._publishing.items()):
            if publication.done():
                del self._publishing[name]
                failure = publication.exception()
                if failure is None:
                    done.append(name)
                error = error or failure
        self.published += len(done)
        doomed = self._unneeded_packs(done)
        if doomed:  # in the background; a leftover goes with the next owner's recovery
            self.store.pool.submit(self.store.delete, self.remote.bucket, doomed)
        if error is not None:
            raise error

    def _unneeded_packs(self, published: list[str]) -> list[str]:
        """The keys of the packs whose every file is now published."""
        doomed = []
        for name in published:
            for seq in self._file_packs.pop(name, ()):
                holding = self._pack_files[seq]
                holding.discard(name)
                if not holding:
                    del self._pack_files[seq]
                    folder = self.hidden / packs.folder(self.partition, self.epoch)
                    doomed.append((folder / packs.pack_name(seq)).key)
        return doomed

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
        """Uploaded like a pack: `sync()` waits for it. Its name is its content's digest, so
        a key that exists holds these very bytes."""
        self._uploads.append(self.store.pool.submit(self.store.put_new, self.hidden / name, data))

    def _drop_manifest(self, name: str) -> None:
        """In the background; a leftover is harmless (a new owner deletes older epochs')."""
        self.store.pool.submit(self.store.delete, self.remote.bucket, [(self.hidden / name).key])

    def finish(self) -> None:
        """Publish every open file and wait until every publication is done; then no pack is
        needed any more."""
        for bucket in list(self._open):
            self._finish(bucket)
        publishing, self._publishing = self._publishing, {}
        for _checkpoint, publication in publishing.values():
            publication.result()
        self.published += len(publishing)
        self.store.delete(self.remote.bucket, self._unneeded_packs(list(self._file_packs)))

    def _finish(self, bucket: str) -> None:
        """Close a committed file and publish it in the background: one conditional PUT of
        its spool (PreconditionFailed: published already, with the same bytes). Until that is
        done the file stays in the checkpoints, and its packs stay."""
        file = self._open[bucket]
        checkpoint = file.checkpoint()
        if file.committed != checkpoint:
            raise RuntimeError("finish() of a file with uncommitted bytes")
        del self._open[bucket]
        os.close(file.fd)
        target = self._target(checkpoint)
        publication = self.store.pool.submit(self._publish, file.name, target)
        self._publishing[file.name] = (checkpoint, publication)

    def _publish(self, name: str, target: S3Location) -> None:
        spool = self.spool / name
        with open(spool, "rb") as body:
            self.store.put_new(target, body)
        spool.unlink(missing_ok=True)

    def _target(self, checkpoint: Checkpoint) -> S3Location:
        """The visible key of a file (in the codec its name says)."""
        return self.remote / checkpoint.finished

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
        self._pieces = []
        self._pack_files.clear()
        self._file_packs.clear()
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
