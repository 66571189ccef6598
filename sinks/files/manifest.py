"""Manifests: a checkpoint of a partition names at most INLINE_FILES open files in its offset
metadata (the broker caps it, 4 KiB by default); past that it names one hidden *manifest*
that lists them all, written and made durable before the commit like the files themselves.

A backfill spreads one batch over hundreds of hour buckets, each an open file: without
manifests every checkpoint could take only a couple dozen records of it. A manifest is
named by its partition, its writer's epoch and a digest of its content
(`p003-0000000007-<digest>.files`, beside the in-progress files), so a checkpoint that names
the same files names the same manifest, and no name is ever written with two contents. Its
writer deletes it once a later commit no longer names it; a new owner keeps the one its
claim names until its own first commit (sinks/files/part_files.py, sinks/s3/part_objects.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson

from sinks.files.names import Checkpoint, manifest_name

# Open files a checkpoint names in the offset metadata itself (about 65 bytes each).
INLINE_FILES = 24


def manifest_of(partition: int, epoch: int, files: Sequence[Checkpoint]) -> tuple[str, bytes]:
    """The name and content of the manifest listing `files`."""
    data = orjson.dumps([[f.file, f.size, f.last] for f in files])
    return manifest_name(partition, epoch, hashlib.sha256(data).hexdigest()), data


def parse(checkpoint: Checkpoint, data: bytes | None) -> list[Checkpoint]:
    """The files a committed manifest lists; OSError when it is missing or not whole."""
    if data is None:
        raise OSError(f"the committed manifest {checkpoint.file} is missing")
    if len(data) != checkpoint.size:
        raise OSError(f"{checkpoint.file}: {len(data)} bytes, its checkpoint {checkpoint.size}")
    return [Checkpoint(str(f), int(s), int(last)) for f, s, last in orjson.loads(data)]
