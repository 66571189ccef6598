"""Crash-safe small-file writes: a reader sees the old content or the new, never a torn file.

Every write goes to a hidden temp file in the target's own directory (a rename is only atomic
within one filesystem), is fsynced, renamed over the target, and the directory is fsynced so
the rename itself survives a power loss. A crash leaves at most a hidden `.<name>.*.tmp` file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames and unlinks in `path` durable; a file fsync alone does not cover its name."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(directory: Path, stem: str) -> Path:
    """A fresh hidden name next to the target, so listings that skip dot files never see it."""
    return directory / f".{stem}.{secrets.token_hex(8)}.tmp"


@contextlib.contextmanager
def open_temp(directory: Path, stem: str) -> Iterator[tuple[BinaryIO, Path]]:
    """Create a new hidden temp file (mode 0666 minus umask, like `open`); remove it on error."""
    path = temp_path(directory, stem)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, path
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise


def sync_file(f: BinaryIO) -> None:
    """Flush Python's buffer and the kernel's, so the data is on disk before any rename."""
    f.flush()
    os.fsync(f.fileno())


def publish(f: BinaryIO, temp: Path, target: Path) -> None:
    """Sync `f` (open on `temp`), rename it over `target`, fsync the directory."""
    sync_file(f)
    os.replace(temp, target)
    fsync_dir(target.parent)


def _keep_mode(f: BinaryIO, target: Path) -> None:
    """A replaced file keeps its permissions rather than taking the temp file's."""
    with contextlib.suppress(FileNotFoundError):
        os.fchmod(f.fileno(), target.stat().st_mode & 0o7777)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the whole content of `path` with `data`, atomically and durably."""
    target = Path(path)
    with open_temp(target.parent, target.name) as (f, temp):
        _keep_mode(f, target)
        f.write(data)
        publish(f, temp, target)


def atomic_append(path: str | os.PathLike[str], data: bytes) -> None:
    """Publish old content + `data` by rename, so a reader never sees a half-appended line.

    The old content is copied in chunks (never read whole). Two concurrent appenders to one file
    would lose one update: callers that may race must serialize (for example with `flock`).
    """
    target = Path(path)
    with open_temp(target.parent, target.name) as (f, temp):
        _keep_mode(f, target)
        with contextlib.suppress(FileNotFoundError), target.open("rb") as old:
            while chunk := old.read(CHUNK_BYTES):
                f.write(chunk)
        f.write(data)
        publish(f, temp, target)
